"""The noVNC console: the browser client's files and the websocket → VNC proxy.

Mounted by the compute app at ``/novnc``: ``vnc_lite.html?token=T`` is a small
page driving noVNC's RFB client (the ``@novnc/novnc`` npm package, which
scripts/setup-runtime.sh unpacks outside the repository), and
``websockify?token=T`` carries the RFB stream to the guest's VNC server on its
compute host. A token comes from the remote-consoles API (any store with
``resolve(token) → (server uuid, host, port) | None``); each one opens at most
one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect


class TokenStore(Protocol):
    """Where console tokens are resolved (compute's ``ConsoleTokens``)."""

    def resolve(self, token: str) -> tuple[str, str, int] | None: ...


def novnc_dir(data_dir: Path | None = None) -> Path | None:
    """Where the noVNC package is unpacked (ONESTACK_NOVNC_DIR, the data dir, the user cache)."""
    candidates = [os.environ.get("ONESTACK_NOVNC_DIR", "")]
    if data_dir is not None:
        candidates.append(str(data_dir / "novnc"))
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidates.append(str(Path(cache) / "onestack" / "novnc"))
    for candidate in candidates:
        if candidate and (Path(candidate) / "core" / "rfb.js").exists():
            return Path(candidate)
    return None


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>onestack console</title>
<style>
  body { margin: 0; background: #222; color: #ddd; font: 14px sans-serif; }
  #status { padding: 4px 8px; background: #333; }
  #screen { width: 100vw; height: calc(100vh - 28px); }
</style>
</head>
<body>
<div id="status">connecting…</div>
<div id="screen"></div>
<script type="module">
import RFB from "./core/rfb.js";
const token = new URLSearchParams(window.location.search).get("token") || "";
const url = new URL("websockify?token=" + encodeURIComponent(token), window.location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
const status = document.getElementById("status");
const rfb = new RFB(document.getElementById("screen"), url.href);
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => { status.textContent = "connected"; });
rfb.addEventListener("disconnect", (e) => {
  status.textContent = e.detail.clean ? "disconnected" : "connection failed";
});
rfb.addEventListener("desktopname", (e) => { document.title = e.detail.name; });
</script>
</body>
</html>
"""


async def _pump_to_guest(websocket: WebSocket, writer: asyncio.StreamWriter) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None and message.get("text") is not None:
            data = str(message["text"]).encode()
        if data:
            writer.write(data)
            await writer.drain()


async def _pump_to_browser(websocket: WebSocket, reader: asyncio.StreamReader) -> None:
    while True:
        data = await reader.read(65536)
        if not data:
            return
        await websocket.send_bytes(data)


def novnc_app(tokens: TokenStore, static_dir: Path | None) -> Starlette:
    """The ``/novnc`` app: the page, noVNC's modules and the websocket proxy."""
    used: set[str] = set()

    async def page(request: Request) -> Response:
        if static_dir is None:
            return PlainTextResponse(
                "The noVNC client is not installed here (scripts/setup-runtime.sh fetches it).",
                status_code=503,
            )
        return HTMLResponse(PAGE)

    async def websockify(websocket: WebSocket) -> None:
        token = websocket.query_params.get("token", "")
        target = tokens.resolve(token) if token and token not in used else None
        if target is None:
            await websocket.close(code=1008, reason="invalid or used console token")
            return
        used.add(token)
        _, host, port = target
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, TimeoutError):
            await websocket.close(code=1011, reason="the console is not reachable")
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
        tasks = [
            asyncio.create_task(_pump_to_guest(websocket, writer)),
            asyncio.create_task(_pump_to_browser(websocket, reader)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close()

    routes: list = [
        Route("/vnc_lite.html", page),
        Route("/vnc.html", page),
        WebSocketRoute("/websockify", websockify),
    ]
    if static_dir is not None:
        routes += [
            Mount("/core", StaticFiles(directory=static_dir / "core")),
            Mount("/vendor", StaticFiles(directory=static_dir / "vendor")),
        ]
    return Starlette(routes=routes)
