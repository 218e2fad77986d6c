"""``/servers/{id}/metadata`` (key/value pairs within the metadata_items quota) and
``/servers/{id}/tags`` (2.26+)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import at_least, service
from onestack.compute.api.lookups import check_unlocked, find_server
from onestack.compute.api.servers import check_metadata_quota
from onestack.compute.models import InstanceMetadata, InstanceTag
from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()

MAX_TAGS = 50


def _items(data: Any, key: str) -> dict[str, str]:
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, dict):
        raise BadRequest(f"Malformed request body: '{key}' is expected.")
    for name, value in items.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise BadRequest("Invalid metadata key.")
        if not isinstance(value, str) or len(value) > 255:
            raise BadRequest(f"Invalid metadata value of {name!r}.")
    return dict(items)


async def _metadata(session: Any, server_uuid: str) -> dict[str, str]:
    rows = (
        await session.execute(
            select(InstanceMetadata).where(InstanceMetadata.instance_uuid == server_uuid)
        )
    ).scalars()
    return {row.key: row.value for row in rows}


async def _write(request: Request, items: dict[str, str], *, replace: bool) -> dict[str, str]:
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        check_unlocked(request, server)
        current = {} if replace else await _metadata(session, server.uuid)
        merged = {**current, **items}
        await check_metadata_quota(request, server.project_id, len(merged))
        stale = delete(InstanceMetadata).where(InstanceMetadata.instance_uuid == server.uuid)
        if not replace:
            stale = stale.where(InstanceMetadata.key.in_(list(items)))
        await session.execute(stale)
        for key, value in items.items():
            session.add(InstanceMetadata(instance_uuid=server.uuid, key=key, value=value))
    return merged


@routes.get("/v2.1/servers/{server_id}/metadata")
async def list_metadata(request: Request) -> Response:
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        return JSONResponse({"metadata": await _metadata(session, server.uuid)})


@routes.post("/v2.1/servers/{server_id}/metadata")
async def update_metadata(request: Request) -> Response:
    items = _items(await json_body(request), "metadata")
    return JSONResponse({"metadata": await _write(request, items, replace=False)})


@routes.put("/v2.1/servers/{server_id}/metadata")
async def replace_metadata(request: Request) -> Response:
    items = _items(await json_body(request), "metadata")
    return JSONResponse({"metadata": await _write(request, items, replace=True)})


@routes.get("/v2.1/servers/{server_id}/metadata/{key}")
async def show_metadata_item(request: Request) -> Response:
    key = request.path_params["key"]
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        found = await _metadata(session, server.uuid)
    if key not in found:
        raise NotFound("Metadata item was not found")
    return JSONResponse({"meta": {key: found[key]}})


@routes.put("/v2.1/servers/{server_id}/metadata/{key}")
async def set_metadata_item(request: Request) -> Response:
    key = request.path_params["key"]
    items = _items(await json_body(request), "meta")
    if list(items) != [key]:
        raise BadRequest("Request body and URI mismatch")
    await _write(request, items, replace=False)
    return JSONResponse({"meta": items})


@routes.delete("/v2.1/servers/{server_id}/metadata/{key}")
async def delete_metadata_item(request: Request) -> Response:
    key = request.path_params["key"]
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        check_unlocked(request, server)
        result = await session.execute(
            delete(InstanceMetadata).where(
                InstanceMetadata.instance_uuid == server.uuid, InstanceMetadata.key == key
            )
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound("Metadata item was not found")
    return Response(status_code=204)


# ----- tags -----------------------------------------------------------------------------


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not 1 <= len(tag) <= 60 or "," in tag or "/" in tag:
        raise BadRequest(f"Invalid tag {tag!r}: 1 to 60 characters, no ',' or '/'.")
    return tag


def _require_tags(request: Request) -> None:
    if not at_least(request, "2.26"):
        raise NotFound("The resource could not be found.")


async def _tags(session: Any, server_uuid: str) -> list[str]:
    rows = await session.execute(
        select(InstanceTag.tag).where(InstanceTag.instance_uuid == server_uuid)
    )
    return sorted(tag for (tag,) in rows)


@routes.get("/v2.1/servers/{server_id}/tags")
async def list_tags(request: Request) -> Response:
    _require_tags(request)
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        return JSONResponse({"tags": await _tags(session, server.uuid)})


@routes.put("/v2.1/servers/{server_id}/tags")
async def replace_tags(request: Request) -> Response:
    _require_tags(request)
    data = await json_body(request)
    tags = data.get("tags") if isinstance(data, dict) else None
    if not isinstance(tags, list):
        raise BadRequest("Malformed request body: 'tags' is expected.")
    tags = list(dict.fromkeys(_check_tag(t) for t in tags))
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        await session.execute(delete(InstanceTag).where(InstanceTag.instance_uuid == server.uuid))
        for tag in tags:
            session.add(InstanceTag(instance_uuid=server.uuid, tag=tag))
    return JSONResponse({"tags": sorted(tags)})


@routes.delete("/v2.1/servers/{server_id}/tags")
async def delete_tags(request: Request) -> Response:
    _require_tags(request)
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        await session.execute(delete(InstanceTag).where(InstanceTag.instance_uuid == server.uuid))
    return Response(status_code=204)


@routes.get("/v2.1/servers/{server_id}/tags/{tag}")
async def check_tag(request: Request) -> Response:
    _require_tags(request)
    tag = request.path_params["tag"]
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        if tag not in await _tags(session, server.uuid):
            raise NotFound(f"Tag {tag} could not be found.")
    return Response(status_code=204)


@routes.put("/v2.1/servers/{server_id}/tags/{tag}")
async def add_tag(request: Request) -> Response:
    _require_tags(request)
    tag = _check_tag(request.path_params["tag"])
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        current = await _tags(session, server.uuid)
        if tag in current:
            return Response(status_code=204)
        if len(current) >= MAX_TAGS:
            raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        session.add(InstanceTag(instance_uuid=server.uuid, tag=tag))
    return Response(status_code=201, headers={"Location": str(request.url)})


@routes.delete("/v2.1/servers/{server_id}/tags/{tag}")
async def delete_tag(request: Request) -> Response:
    _require_tags(request)
    tag = request.path_params["tag"]
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        result = await session.execute(
            delete(InstanceTag).where(
                InstanceTag.instance_uuid == server.uuid, InstanceTag.tag == tag
            )
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"Tag {tag} could not be found.")
    return Response(status_code=204)
