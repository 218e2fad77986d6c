"""The image API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette

from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import glance_error
from onestack.core.auth.middleware import TokenMiddleware, TokenValidator
from onestack.image.api import data, images, members, schemas, versions
from onestack.image.service import ImageService

MODULES = (versions, images, data, members, schemas)


def is_public(method: str, path: str) -> bool:
    """Version documents, health and metrics need no token."""
    return path in ("/", "/versions", "/healthcheck", "/metrics")


def build_app(service: ImageService, validator: TokenValidator) -> Starlette:
    """The Glance v2 API of ``service``, trusting tokens ``validator`` accepts."""
    routes = [route for module in MODULES for route in module.routes.routes]
    app = service_app(
        "image",
        routes,
        glance_error,
        middleware=[(TokenMiddleware, {"validator": validator, "is_public": is_public})],
    )
    app.state.images = service
    return app
