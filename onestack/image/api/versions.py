"""Version discovery: ``GET /`` and ``GET /versions`` list the v2 versions (300 at the root)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable, service_root

routes = RouteTable()
CURRENT = "2.16"
SUPPORTED = ["2.16", "2.15", "2.9", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0"]


def _versions(request: Request) -> dict[str, Any]:
    href = f"{service_root(request)}/v2/"
    return {
        "versions": [
            {
                "id": f"v{v}",
                "status": "CURRENT" if v == CURRENT else "SUPPORTED",
                "links": [{"rel": "self", "href": href}],
            }
            for v in SUPPORTED
        ]
    }


@routes.get("/")
async def root(request: Request) -> Response:
    return JSONResponse(_versions(request), status_code=300)


@routes.get("/versions")
async def versions(request: Request) -> Response:
    return JSONResponse(_versions(request))
