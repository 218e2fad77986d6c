"""The identity API as an ASGI app."""

from __future__ import annotations

from starlette.applications import Starlette

from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import keystone_error
from onestack.core.auth.middleware import TokenMiddleware
from onestack.identity.api import (
    app_credentials,
    assignments,
    auth,
    catalog,
    credentials,
    domains,
    ec2tokens,
    groups,
    limits,
    projects,
    roles,
    users,
    versions,
)
from onestack.identity.service import IdentityService

MODULES = (
    versions,
    auth,
    domains,
    projects,
    users,
    groups,
    roles,
    assignments,
    catalog,
    credentials,
    ec2tokens,
    app_credentials,
    limits,
)
PUBLIC = {("GET", "/"), ("GET", "/v3"), ("GET", "/v3/"), ("POST", "/v3/auth/tokens")}


def is_public(method: str, path: str) -> bool:
    """Version documents, token issue, health and metrics need no token."""
    if method == "HEAD":
        method = "GET"
    return (method, path) in PUBLIC or path in ("/healthcheck", "/metrics")


def build_app(identity: IdentityService) -> Starlette:
    """The Keystone v3 API of ``identity``."""
    routes = [route for module in MODULES for route in module.routes.routes]
    app = service_app(
        "identity",
        routes,
        keystone_error,
        middleware=[(TokenMiddleware, {"validator": identity.tokens, "is_public": is_public})],
    )
    app.state.identity = identity
    return app
