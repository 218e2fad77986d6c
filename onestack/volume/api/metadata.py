"""The metadata sub-resource Cinder gives volumes and snapshots: ``…/{id}/metadata[/{key}]``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import (
    body_of,
    enforce,
    fetch,
    invalid,
    metadata_field,
    owner,
    service,
)

Load = Callable[[AsyncSession, Any], Awaitable[dict[str, str]]]
Store = Callable[[AsyncSession, Any, dict[str, str]], Awaitable[None]]
WRITABLE_STATUSES = ("available", "in-use", "error", "creating", "reserved", "attaching",
                     "detaching", "maintenance", "backing-up", "error_extending")  # fmt: skip


def add_metadata_routes(
    routes: RouteTable, collection: str, kind: str, model: Any, load: Load, store: Store
) -> None:
    """Register the six metadata endpoints of ``/v3/<collection>/{id}/metadata``."""
    base = f"/v3/{collection}/{{ident}}/metadata"

    async def row_of(request: Request, session: AsyncSession, write: bool) -> Any:
        row = await fetch(request, session, model, request.path_params["ident"], kind)
        enforce(request, "write" if write else "read", owner(row))
        if write and getattr(row, "status", "available") not in WRITABLE_STATUSES:
            raise invalid(f"{kind} status must be available or in-use to change metadata.")
        return row

    @routes.get(base)
    async def show_all(request: Request) -> Response:
        async with service(request).db.session() as session:
            row = await row_of(request, session, False)
            return JSONResponse({"metadata": await load(session, row)})

    async def write_all(request: Request, replace: bool) -> Response:
        wanted = _metadata_of(await json_body(request))
        async with service(request).db.session() as session:
            row = await row_of(request, session, True)
            current = {} if replace else await load(session, row)
            current.update(wanted)
            await store(session, row, current)
            return JSONResponse({"metadata": current})

    @routes.post(base)
    async def merge(request: Request) -> Response:
        return await write_all(request, replace=False)

    @routes.put(base)
    async def replace(request: Request) -> Response:
        return await write_all(request, replace=True)

    @routes.get(base + "/{key}")
    async def show_key(request: Request) -> Response:
        key = request.path_params["key"]
        async with service(request).db.session() as session:
            current = await load(session, await row_of(request, session, False))
        if key not in current:
            raise NotFound("Metadata item was not found.")
        return JSONResponse({"meta": {key: current[key]}})

    @routes.put(base + "/{key}")
    async def set_key(request: Request) -> Response:
        key = request.path_params["key"]
        meta = metadata_field(body_of(await json_body(request), "meta"), "meta")
        if len(meta) > 1:
            raise invalid("Request body contains too many items.")
        if key not in meta:
            raise invalid("Request body and URI mismatch.")
        async with service(request).db.session() as session:
            row = await row_of(request, session, True)
            current = await load(session, row)
            current[key] = meta[key]
            await store(session, row, current)
        return JSONResponse({"meta": meta})

    @routes.delete(base + "/{key}")
    async def delete_key(request: Request) -> Response:
        key = request.path_params["key"]
        async with service(request).db.session() as session:
            row = await row_of(request, session, True)
            current = await load(session, row)
            if key not in current:
                raise NotFound("Metadata item was not found.")
            del current[key]
            await store(session, row, current)
        return Response(status_code=200)


def _metadata_of(data: Any) -> dict[str, str]:
    if not isinstance(data, dict) or "metadata" not in data:
        raise invalid("Missing required element 'metadata' in request body.")
    return metadata_field(data["metadata"])
