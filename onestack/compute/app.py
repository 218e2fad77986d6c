"""The compute API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from onestack.compute.api import (
    aggregates,
    availability_zones,
    external_events,
    flavors,
    hypervisors,
    instance_actions,
    keypairs,
    limits,
    migrations,
    quota_sets,
    server_actions,
    server_diagnostics,
    server_groups,
    server_interfaces,
    server_ips,
    server_metadata,
    server_password,
    server_security_groups,
    server_soft_delete,
    servers,
    services,
    tenant_usage,
    versions,
    volume_attachments,
)
from onestack.compute.api.common import MICROVERSIONS
from onestack.compute.service import ComputeService
from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import nova_error
from onestack.core.asgi.microversion import MicroversionMiddleware
from onestack.core.asgi.routing import route_path
from onestack.core.auth.middleware import TokenMiddleware, TokenValidator

# Each resource module has a ``routes`` table; add new ones here.
MODULES = (
    versions,
    flavors,
    keypairs,
    servers,
    server_actions,
    server_metadata,
    server_ips,
    server_interfaces,
    server_security_groups,
    server_soft_delete,
    server_password,
    server_diagnostics,
    external_events,
    aggregates,
    availability_zones,
    hypervisors,
    services,
    server_groups,
    quota_sets,
    limits,
    tenant_usage,
    migrations,
    instance_actions,
    volume_attachments,
)


def is_public(method: str, path: str) -> bool:
    """Version documents, health and metrics need no token; neither do the metadata service
    (signed by the network's proxy) and the noVNC console (its own single-use tokens)."""
    if path.startswith(("/metadata/", "/novnc/")) or path in ("/metadata", "/novnc"):
        return True
    return path in ("/", "/v2.1", "/v2.1/", "/healthcheck", "/metrics")


class NovaRequests:
    """Nova's URL and version conventions, before routing.

    ``/v2.1/{project_id}/servers`` and ``/v2.1/servers`` reach the same handlers (a first
    segment that is no collection name is dropped). The microversion is negotiated for
    every ``/v2.1/...`` request (406 when unsupported, 400 when garbage) and echoed in
    ``OpenStack-API-Version`` and ``X-OpenStack-Nova-API-Version`` on the response.
    """

    def __init__(self, app: ASGIApp, collections: set[str]):
        self.app = app
        self.versioned = MicroversionMiddleware(app, MICROVERSIONS)
        self.collections = collections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        parts = path.split("/")
        if len(parts) > 3 and parts[1] == "v2.1" and parts[2] not in self.collections:
            stripped = "/".join(parts[:2] + parts[3:])
            prefix = scope["path"][: len(scope["path"]) - len(path)]
            scope = {**scope, "path": prefix + stripped, "raw_path": (prefix + stripped).encode()}
        versioned = path.startswith("/v2.1/") and path != "/v2.1/"
        await (self.versioned if versioned else self.app)(scope, receive, send)


def guest_routes(service: ComputeService) -> list[BaseRoute]:
    """The metadata service (``/metadata``) and the noVNC console (``/novnc``) of real guests."""
    from onestack.compute.console import novnc_app, novnc_dir
    from onestack.compute.metadata import metadata_app, shared_secret
    from onestack.compute.metadata.lookup import database_lookup

    settings = service.settings
    return [
        Mount("/metadata", metadata_app(database_lookup(service.db), shared_secret(settings))),
        Mount("/novnc", novnc_app(service.consoles, novnc_dir(settings.data_dir))),
    ]


def build_app(service: ComputeService, validator: TokenValidator) -> Starlette:
    """The Nova v2.1 API of ``service``."""
    routes = [route for module in MODULES for route in module.routes.routes]
    collections = {
        route.path.split("/")[2]
        for route in routes
        if route.path.startswith("/v2.1/") and len(route.path.split("/")) > 2
    }
    app = service_app(
        "compute",
        [*routes, *guest_routes(service)],
        nova_error,
        middleware=[
            (NovaRequests, {"collections": collections - {""}}),
            (TokenMiddleware, {"validator": validator, "is_public": is_public}),
        ],
    )
    app.state.compute = service
    return app
