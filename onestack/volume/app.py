"""The block storage API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import nova_error
from onestack.core.asgi.microversion import MicroversionMiddleware
from onestack.core.asgi.routing import route_path
from onestack.core.auth.middleware import TokenMiddleware, TokenValidator
from onestack.volume.api import (
    attachments,
    availability_zones,
    backups,
    limits,
    messages,
    qos_specs,
    quotas,
    services,
    snapshots,
    transfers,
    types,
    versions,
    volume_actions,
    volumes,
)
from onestack.volume.api.versions import MICROVERSIONS
from onestack.volume.service import VolumeService

MODULES = (
    versions,
    volumes,
    volume_actions,
    snapshots,
    backups,
    attachments,
    types,
    qos_specs,
    quotas,
    limits,
    transfers,
    availability_zones,
    services,
    messages,
)


def is_public(method: str, path: str) -> bool:
    """Version documents, health and metrics need no token."""
    return path in ("/", "/v3", "/v3/", "/healthcheck", "/metrics")


class CinderRequests:
    """Cinder's URL and version conventions, before routing.

    ``/v3/{project_id}/volumes`` and ``/v3/volumes`` (3.67) reach the same handlers:
    a first segment that is no collection name is the project id, kept for the
    handlers (which check it against the token's). The microversion is negotiated
    (406 when unsupported) and echoed in ``OpenStack-API-Version`` on the response.
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
        state = scope.setdefault("state", {})
        if len(parts) > 3 and parts[1] == "v3" and parts[2] not in self.collections:
            state["url_project_id"] = parts[2]
            stripped = "/".join(parts[:2] + parts[3:])
            prefix = scope["path"][: len(scope["path"]) - len(path)]
            scope = {**scope, "path": prefix + stripped, "raw_path": (prefix + stripped).encode()}
        versioned = path.startswith("/v3/") and path != "/v3/"
        await (self.versioned if versioned else self.app)(scope, receive, send)


def build_app(service: VolumeService, validator: TokenValidator) -> Starlette:
    """The Cinder v3 API of ``service``."""
    routes = [route for module in MODULES for route in module.routes.routes]
    collections = {
        route.path.split("/")[2]
        for route in routes
        if route.path.startswith("/v3/") and len(route.path.split("/")) > 2
    }
    app = service_app(
        "volume",
        routes,
        nova_error,
        middleware=[
            (CinderRequests, {"collections": collections - {""}}),
            (TokenMiddleware, {"validator": validator, "is_public": is_public}),
        ],
    )
    app.state.volume = service
    return app
