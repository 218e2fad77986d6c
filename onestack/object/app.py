"""The object service's ASGI apps: Swift's API (with the S3 view beside it) and the node API."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onestack.core.asgi.app import service_app
from onestack.core.auth.middleware import TokenMiddleware, TokenValidator
from onestack.object.api import accounts, containers, info, objects, tempurl
from onestack.object.api.common import trans_id
from onestack.object.api.errors import swift_error
from onestack.object.service import ObjectService

MODULES = (info, accounts, containers, objects)


class TransIdMiddleware:
    """Swift's ``X-Trans-Id`` on every answer; the same id is the OpenStack request id."""

    def __init__(self, app: ASGIApp, headers: tuple[bytes, ...] = (b"x-trans-id",)):
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        txid = trans_id()
        scope.setdefault("state", {})["request_id"] = txid
        encoded = txid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        *((name, encoded) for name in self.headers),
                    ],
                }
            await send(message)

        await self.app(scope, receive, send_with_id)


class TempURLMiddleware:
    """Requests carrying ``temp_url_sig`` are authorized by their signature alone."""

    def __init__(self, app: ASGIApp, service: ObjectService):
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"temp_url_sig" in scope.get("query_string", b""):
            from urllib.parse import parse_qsl

            from onestack.core.asgi.routing import route_path

            path = route_path(scope)
            parts = path.split("/", 4)
            if len(parts) == 5 and parts[1] == "v1":
                query = dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True))
                granted = await tempurl.verify(
                    self.service.store,
                    scope["method"],
                    path,
                    parts[2],
                    parts[3],
                    parts[4],
                    query,
                )
                scope["state"]["temp_url"] = granted
                scope["headers"] = [h for h in scope["headers"] if h[0] != b"x-auth-token"]
        await self.app(scope, receive, send)


class S3Dispatch:
    """On the proxy's own port, S3-signed requests outside Swift's paths go to the S3 view."""

    SWIFT_PATHS = ("/v1/", "/v1.0/", "/info", "/healthcheck", "/metrics")

    def __init__(self, swift: ASGIApp, s3: ASGIApp):
        self.swift = swift
        self.s3 = s3

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from onestack.core.asgi.routing import route_path
            from onestack.object.s3.auth import is_s3_request

            path = route_path(scope)
            if not path.startswith(self.SWIFT_PATHS):
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                if is_s3_request(headers, scope.get("query_string", b"").decode("latin-1")):
                    await self.s3(scope, receive, send)
                    return
        await self.swift(scope, receive, send)


def build_app(service: ObjectService, validator: TokenValidator) -> ASGIApp:
    """Swift's API v1 for ``service``; tokens checked by ``validator``, anonymous allowed
    (access is decided per request by ownership, ACLs and temp URLs)."""
    routes = [route for module in MODULES for route in module.routes.routes]
    app: Starlette = service_app(
        "object",
        routes,
        swift_error,
        middleware=[
            (TempURLMiddleware, {"service": service}),
            (TokenMiddleware, {"validator": validator, "is_public": lambda m, p: True}),
        ],
    )
    app.state.object_service = service
    return TransIdMiddleware(app)
