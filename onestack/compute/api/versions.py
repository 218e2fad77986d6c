"""Version discovery: ``GET /`` (every version) and ``GET /v2.1/``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import MICROVERSIONS
from onestack.core.asgi.routing import RouteTable, service_root

routes = RouteTable()


def _version(request: Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": str(MICROVERSIONS.maximum),
        "min_version": str(MICROVERSIONS.minimum),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"href": f"{service_root(request)}/v2.1/", "rel": "self"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


@routes.get("/")
async def all_versions(request: Request) -> Response:
    """Every API version, as Nova answers its root."""
    return JSONResponse({"versions": [_version(request)]})


@routes.get("/v2.1")
@routes.get("/v2.1/")
async def v21_version(request: Request) -> Response:
    return JSONResponse({"version": _version(request)})
