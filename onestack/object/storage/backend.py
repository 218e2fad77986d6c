"""How proxies, agents and other nodes talk to a storage node: one request/response contract.

A backend request names a device, a partition and a path (account, container,
object) with headers and an optional streamed body, as Swift's backend HTTP API
does. ``LocalBackend`` hands it to a :class:`StorageNode` in this process (no
socket, no copy); ``RemoteBackend`` sends it over HTTP to another node's
``/object-node`` API. Bodies stream both ways in either case.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from onestack.object.storage.diskfile import ContentDigest

Body = AsyncIterator[bytes] | bytes | None
NODE_PREFIX = "/object-node"
SECRET_HEADER = "x-backend-secret"
# HTTP parsers accept only known methods: Swift's REPLICATE travels as a POST that says so.
METHOD_HEADER = "x-backend-method"
# Names an in-process :class:`SharedDigest`; never honoured from the network.
SHARED_DIGEST_HEADER = "x-backend-shared-digest"


class SharedDigest:
    """The digest of an upload (MD5, block CRCs), computed once by the proxy for all replicas
    in this process.

    Every replica writes the very same bytes objects, so hashing them three times
    would only cost CPU; the proxy hashes each chunk once and sets ``complete``
    before the replicas see the end of the body.
    """

    registry: dict[str, SharedDigest] = {}

    def __init__(self) -> None:
        import uuid

        self.id = uuid.uuid4().hex
        self.digest = ContentDigest()
        self.complete: ContentDigest | None = None
        SharedDigest.registry[self.id] = self

    def close(self) -> None:
        SharedDigest.registry.pop(self.id, None)


@dataclass
class BackendResponse:
    """A storage node's answer; ``body`` streams and must be read or closed."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: AsyncIterator[bytes] | None = None
    on_close: Callable[[], Awaitable[None]] | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def read(self) -> bytes:
        if self.body is None:
            return b""
        try:
            return b"".join([chunk async for chunk in self.body])
        finally:
            await self.close()

    async def close(self) -> None:
        body, self.body = self.body, None
        if body is not None and hasattr(body, "aclose"):
            with contextlib.suppress(Exception):
                await body.aclose()
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            await on_close()


def error(status: int, message: str = "") -> BackendResponse:
    """A bodiless answer carrying a reason for the logs."""
    return BackendResponse(status, {"x-backend-reason": message} if message else {})


class Backend(Protocol):
    """One storage node, wherever it runs."""

    async def request(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: Body = None,
        query: dict[str, str] | None = None,
    ) -> BackendResponse: ...


class NodeHandler(Protocol):
    async def handle(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse: ...


async def as_stream(body: Body) -> AsyncIterator[bytes]:
    """Any body as an async iterator of chunks."""
    if body is None:
        return
    if isinstance(body, bytes):
        if body:
            yield body
        return
    async for chunk in body:
        yield chunk


class LocalBackend:
    """A node in this process: requests become method calls."""

    def __init__(self, node: NodeHandler):
        self.node = node

    async def request(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: Body = None,
        query: dict[str, str] | None = None,
    ) -> BackendResponse:
        lowered = {k.lower(): v for k, v in headers.items()}
        return await self.node.handle(
            method, device, part, path, lowered, as_stream(body), query or {}
        )


def node_path(device: str, part: int, path: tuple[str, str, str]) -> str:
    segments = [device, str(part), *(p for p in path if p)]
    return NODE_PREFIX + "/" + "/".join(quote(s, safe="") for s in segments)


class RemoteBackend:
    """A node elsewhere, over HTTP with a shared pool of connections."""

    def __init__(self, client: httpx.AsyncClient, address: str, secret: str, timeout: float):
        self.client = client
        self.base = f"http://{address}"
        self.secret = secret
        self.timeout = timeout

    async def request(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: Body = None,
        query: dict[str, str] | None = None,
    ) -> BackendResponse:
        url = self.base + node_path(device, part, path)
        sent = {k.lower(): v for k, v in headers.items()}
        sent[SECRET_HEADER] = self.secret
        if method == "REPLICATE":
            method = "POST"
            sent[METHOD_HEADER] = "REPLICATE"
        content: Any = body
        if content is not None and not isinstance(content, bytes):
            sent.pop("content-length", None)
        # Metadata values may be any bytes a client sent: latin-1 keeps them as they were.
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()]
        request = self.client.build_request(
            method, url, headers=raw_headers, content=content, params=query, timeout=self.timeout
        )
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.TransportError, OSError) as exc:
            return error(503, f"{type(exc).__name__}: {exc}")
        headers_out = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers.raw
        }

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in response.aiter_raw():
                yield chunk

        async def close() -> None:
            await response.aclose()

        if method == "HEAD" or response.status_code in (204, 304):
            await response.aclose()
            return BackendResponse(response.status_code, headers_out)
        return BackendResponse(response.status_code, headers_out, chunks(), close)


async def with_timeout(awaitable: Awaitable[BackendResponse], seconds: float) -> BackendResponse:
    """A backend call bounded in time: a node that hangs counts as unavailable."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        return error(504, "backend timeout")
