"""The network API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette

from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import neutron_error
from onestack.core.auth.middleware import TokenMiddleware, TokenValidator
from onestack.network.api import (
    agents,
    floating_ips,
    networks,
    ports,
    quotas,
    routers,
    security_groups,
    subnets,
    tags,
    versions,
)
from onestack.network.service import NetworkService

MODULES = (
    versions,
    networks,
    subnets,
    ports,
    security_groups,
    routers,
    floating_ips,
    quotas,
    agents,
    tags,
)


def is_public(method: str, path: str) -> bool:
    """Version documents, health and metrics need no token."""
    return path in ("/", "/v2.0", "/v2.0/", "/healthcheck", "/metrics")


def build_app(service: NetworkService, validator: TokenValidator) -> Starlette:
    """The Neutron v2.0 API of ``service``."""
    routes = [route for module in MODULES for route in module.routes.routes]
    app = service_app(
        "network",
        routes,
        neutron_error,
        middleware=[(TokenMiddleware, {"validator": validator, "is_public": is_public})],
    )
    app.state.network = service
    return app
