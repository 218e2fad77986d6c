"""The metadata proxy: 169.254.169.254:80 inside each DHCP namespace, served by the agent.

The agent opens the listening socket inside the namespace (a short-lived thread
enters it with setns(2)) and serves it from its own event loop, so requests go on
to compute from the host's namespace without a process per network. A request is
tied to its port by source address and network, then forwarded to compute's
metadata service with the instance id signed (HMAC-SHA256, shared secret).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import hmac
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
PORT = 80
MAX_HEADER = 65536
# Finds compute's metadata base URL (None when there is no compute service).
UpstreamLookup = Callable[[], Awaitable[str | None]]


def sign(secret: str, instance_id: str) -> str:
    """X-Instance-ID-Signature: hex HMAC-SHA256 of the instance id."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def socket_in_namespace(netns: str, address: str, port: int) -> socket.socket:
    """A listening TCP socket bound inside ``netns`` (it stays there once made)."""
    result: dict[str, Any] = {}

    def enter_and_bind() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(128)
            sock.setblocking(False)
            result["socket"] = sock
        except Exception as exc:
            result["error"] = exc
        finally:
            os.close(target)

    # The thread ends inside the namespace; no other code ever runs on it.
    thread = threading.Thread(target=enter_and_bind, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sock: socket.socket = result["socket"]
    return sock


class MetadataProxy:
    """One listening socket per network; ``ports`` maps (network, address) to the port."""

    def __init__(self, secret: str, upstream: UpstreamLookup):
        self.secret = secret
        self.upstream = upstream
        self.ports: dict[tuple[str, str], dict[str, Any]] = {}
        self.servers: dict[str, asyncio.Server] = {}
        self.http = httpx.AsyncClient(timeout=30.0)

    async def serve(self, network_id: str, netns: str, address: str) -> None:
        """Listen on ``address``:80 inside ``netns`` for ``network_id`` (idempotent)."""
        if network_id in self.servers:
            return
        sock = socket_in_namespace(netns, address, PORT)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(network_id, reader, writer)

        self.servers[network_id] = await asyncio.start_server(handle, sock=sock)

    async def forget(self, network_id: str) -> None:
        """Stop serving a network (its namespace is going away)."""
        server = self.servers.pop(network_id, None)
        if server is not None:
            server.close()
            await server.wait_closed()

    async def close(self) -> None:
        for network_id in list(self.servers):
            await self.forget(network_id)
        await self.http.aclose()

    async def _handle(
        self, network_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status, headers, body = await self._answer(
                network_id, writer.get_extra_info("peername")[0], head
            )
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        except Exception:
            log.exception("metadata request on network %s failed", network_id)
            status, headers, body = 500, {"Content-Type": "text/plain"}, b"Internal error\n"
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "-")
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(lines).encode() + body)
        try:
            await writer.drain()
        finally:
            writer.close()

    async def _answer(
        self, network_id: str, source: str, head: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = request_line.partition(" ")
        path = rest.rsplit(" ", 1)[0] or "/"
        port = self.ports.get((network_id, source))
        if port is None or not port.get("device_id"):
            return 404, {"Content-Type": "text/plain"}, b"No instance at this address\n"
        base = await self.upstream()
        if base is None:
            return 500, {"Content-Type": "text/plain"}, b"No metadata service\n"
        instance = port["device_id"]
        response = await self.http.request(
            method if method in ("GET", "HEAD") else "GET",
            base + path,
            headers={
                "X-Instance-ID": instance,
                "X-Tenant-ID": port["project_id"],
                "X-Forwarded-For": source,
                "X-Instance-ID-Signature": sign(self.secret, instance),
            },
        )
        kept = {"Content-Type": response.headers.get("content-type", "text/plain")}
        return response.status_code, kept, response.content
