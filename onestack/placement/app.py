"""The placement API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import NotAcceptable, placement_error
from onestack.core.asgi.microversion import MicroversionMiddleware
from onestack.core.auth.middleware import TokenMiddleware, TokenValidator
from onestack.placement.api import (
    aggregates,
    allocation_candidates,
    allocations,
    inventories,
    resource_classes,
    resource_providers,
    traits,
    usages,
    versions,
)
from onestack.placement.service import VERSIONS, PlacementService

MODULES = (
    versions,
    resource_providers,
    inventories,
    usages,
    allocations,
    allocation_candidates,
    traits,
    resource_classes,
    aggregates,
)


def is_public(method: str, path: str) -> bool:
    """The version document, health and metrics need no token."""
    return path in ("/", "/healthcheck", "/metrics")


def accepts_json(accept: str) -> bool:
    """Whether an ``Accept`` header admits ``application/json`` (q=0 excludes)."""
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() not in ("application/json", "application/*", "*/*"):
            continue
        quality = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            continue
    return False


class AcceptJson:
    """Placement only speaks JSON: a request that will not accept it gets 406."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept" and value and not accepts_json(value.decode("latin-1")):
                    raise NotAcceptable("Only application/json is provided")
        await self.app(scope, receive, send)


def build_app(service: PlacementService, validator: TokenValidator) -> Starlette:
    """The Placement API of ``service``."""
    routes = [route for module in MODULES for route in module.routes.routes]
    app = service_app(
        "placement",
        routes,
        placement_error,
        middleware=[
            (MicroversionMiddleware, {"policy": VERSIONS}),
            (AcceptJson, {}),
            (TokenMiddleware, {"validator": validator, "is_public": is_public}),
        ],
    )
    app.state.placement = service
    return app
