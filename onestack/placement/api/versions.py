"""``GET /``: the one major version and its microversion range."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import json_response
from onestack.placement.service import VERSIONS

routes = RouteTable()


@routes.get("/")
async def versions(request: Request) -> Response:
    return json_response(
        request,
        {
            "versions": [
                {
                    "id": f"v{VERSIONS.minimum}",
                    "min_version": str(VERSIONS.minimum),
                    "max_version": str(VERSIONS.maximum),
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": ""}],
                }
            ]
        },
    )
