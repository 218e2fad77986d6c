"""Version discovery: ``GET /`` (300, all versions) and ``GET /v3`` (this version)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable, service_root

routes = RouteTable()


def _v3(request: Request) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{service_root(request)}/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@routes.get("/")
async def versions(request: Request) -> Response:
    return JSONResponse({"versions": {"values": [_v3(request)]}}, status_code=300)


@routes.get("/v3")
async def version(request: Request) -> Response:
    return JSONResponse({"version": _v3(request)})


routes.get("/v3/")(version)
