"""Tags on every network resource: ``/v2.0/{resources}/{id}/tags[/{tag}]``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network.api.common import enforce, fetch, service
from onestack.network.models import (
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    Subnet,
    SubnetPool,
)

routes = RouteTable()

TAGGED: dict[str, tuple[Any, str]] = {
    "networks": (Network, "network"),
    "subnets": (Subnet, "subnet"),
    "subnetpools": (SubnetPool, "subnet_pool"),
    "ports": (Port, "port"),
    "routers": (Router, "router"),
    "floatingips": (FloatingIP, "floating_ip"),
    "security-groups": (SecurityGroup, "security_group"),
}
MAX_TAGS = 50


def _checked(tags: Any) -> list[str]:
    if not isinstance(tags, list) or not all(
        isinstance(t, str) and 0 < len(t) <= 255 for t in tags
    ):
        raise BadRequest("Invalid tags: a list of strings of 1 to 255 characters.")
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"At most {MAX_TAGS} tags per resource.")
    return list(dict.fromkeys(tags))


async def _change(request: Request, change: Any) -> Response:
    kind = request.path_params["resources"]
    if kind not in TAGGED:
        raise NotFound("The resource could not be found.", type="HTTPNotFound")
    model, name = TAGGED[kind]
    async with service(request).db.session() as session:
        row = await fetch(request, session, model, request.path_params["resource_id"], name)
        if change is None:
            enforce(request, "read")
            return JSONResponse({"tags": list(row.tags or [])})
        enforce(request, "update", {"project_id": row.project_id})
        response = change(row)
        row.revision_number += 1
        return response


@routes.get("/v2.0/{resources}/{resource_id}/tags")
async def list_tags(request: Request) -> Response:
    return await _change(request, None)


@routes.put("/v2.0/{resources}/{resource_id}/tags")
async def replace_tags(request: Request) -> Response:
    body = await json_body(request)
    tags = _checked(body.get("tags") if isinstance(body, dict) else None)

    def replace(row: Any) -> Response:
        row.tags = tags
        return JSONResponse({"tags": tags})

    return await _change(request, replace)


@routes.delete("/v2.0/{resources}/{resource_id}/tags")
async def clear_tags(request: Request) -> Response:
    def clear(row: Any) -> Response:
        row.tags = []
        return Response(status_code=204)

    return await _change(request, clear)


@routes.get("/v2.0/{resources}/{resource_id}/tags/{tag}")
async def check_tag(request: Request) -> Response:
    tag = request.path_params["tag"]

    def check(row: Any) -> Response:
        if tag not in (row.tags or []):
            raise NotFound(f"Tag {tag} could not be found.", type="TagNotFound")
        return Response(status_code=204)

    return await _change(request, check)


@routes.put("/v2.0/{resources}/{resource_id}/tags/{tag}")
async def add_tag(request: Request) -> Response:
    tag = request.path_params["tag"]

    def add(row: Any) -> Response:
        row.tags = _checked([*(row.tags or []), tag])
        return Response(status_code=201)

    return await _change(request, add)


@routes.delete("/v2.0/{resources}/{resource_id}/tags/{tag}")
async def remove_tag(request: Request) -> Response:
    tag = request.path_params["tag"]

    def remove(row: Any) -> Response:
        if tag not in (row.tags or []):
            raise NotFound(f"Tag {tag} could not be found.", type="TagNotFound")
        row.tags = [t for t in row.tags if t != tag]
        return Response(status_code=204)

    return await _change(request, remove)
