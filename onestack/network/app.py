"""The network API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    subnetpools,
    subnets,
    tags,
    versions,
)
from onestack.network.service import NetworkService

MODULES = (
    versions,
    networks,
    subnets,
    subnetpools,
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


class ChangeNotifier:
    """After a successful write (POST, PUT, DELETE) the agents are told to resync."""

    def __init__(self, app: ASGIApp, service: NetworkService):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "DELETE"):
            await self.app(scope, receive, send)
            return
        succeeded = False

        async def watch(message: Message) -> None:
            nonlocal succeeded
            if message["type"] == "http.response.start":
                succeeded = message["status"] < 400
            await send(message)

        await self.app(scope, receive, watch)
        if succeeded:
            self.service.changed()


def build_app(service: NetworkService, validator: TokenValidator) -> Starlette:
    """The Neutron v2.0 API of ``service``."""
    routes = [route for module in MODULES for route in module.routes.routes]
    app = service_app(
        "network",
        routes,
        neutron_error,
        middleware=[
            (TokenMiddleware, {"validator": validator, "is_public": is_public}),
            (ChangeNotifier, {"service": service}),
        ],
    )
    app.state.network = service
    return app
