"""The storage node's HTTP API (``/object-node/{device}/{partition}/{account}/…``).

A thin ASGI adapter: it checks the cluster secret, turns the request into a
backend request for :class:`StorageNode` and streams the answer back. Plain
ASGI rather than a router: every request has the same shape, and this is the
hot path between nodes.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, unquote

from starlette.types import Receive, Scope, Send

from onestack.object.storage.backend import (
    METHOD_HEADER,
    NODE_PREFIX,
    SECRET_HEADER,
    SHARED_DIGEST_HEADER,
    BackendResponse,
    NodeHandler,
)


class NodeApp:
    """ASGI app serving one node's backend API."""

    def __init__(self, node: NodeHandler, secret: str):
        self.node = node
        self.secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        given = headers.pop(SECRET_HEADER, "").encode("latin-1")
        headers.pop(SHARED_DIGEST_HEADER, None)
        if not hmac.compare_digest(given, self.secret):
            await _answer(send, BackendResponse(403, {}))
            return
        method = headers.pop(METHOD_HEADER, scope["method"])
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        if path.startswith(NODE_PREFIX):
            path = path[len(NODE_PREFIX) :]
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if len(segments) < 2 or not segments[1].isdigit() or len(segments) > 5:
            await _answer(send, BackendResponse(400, {}))
            return
        device, part = segments[0], int(segments[1])
        names = [*segments[2:], "", "", ""][:3]
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionError("client disconnected")
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        response = await self.node.handle(
            method, device, part, (names[0], names[1], names[2]), headers, body(), query
        )
        await _answer(send, response, head=scope["method"] == "HEAD")


async def _answer(send: Send, response: BackendResponse, *, head: bool = False) -> None:
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in response.headers.items()
        if k not in ("transfer-encoding",)
    ]
    has_length = "content-length" in response.headers
    if response.body is None and not has_length and response.status not in (204, 304):
        headers.append((b"content-length", b"0"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    try:
        if response.body is not None and not head:
            async for chunk in response.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await response.close()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
