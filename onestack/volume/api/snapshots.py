"""``/v3/snapshots``: create (``force`` for attached volumes), list, show, update, delete,
admin actions, and metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import affected
from onestack.volume.api.common import (
    as_bool,
    at_least,
    body_of,
    each,
    enforce,
    fetch,
    invalid,
    list_collection,
    metadata_field,
    owner,
    project_scope,
    service,
    text_field,
    time_filter,
)
from onestack.volume.api.lookups import quota_held
from onestack.volume.api.metadata import add_metadata_routes
from onestack.volume.lifecycle import invalid_volume
from onestack.volume.models import Snapshot, Volume, VolumeType
from onestack.volume.payloads import snapshot_payload, volume_payload
from onestack.volume.usage import snapshot_usage
from onestack.volume.views import snapshot_view

routes = RouteTable()

SORT_KEYS = {k: k for k in ("created_at", "updated_at", "name", "size", "status", "id",
                            "volume_id")}  # fmt: skip
SNAPSHOT_STATUSES = ("creating", "available", "deleting", "error", "error_deleting",
                     "restoring", "unmanaging", "backing-up")  # fmt: skip


@routes.post("/v3/snapshots")
async def create_snapshot(request: Request) -> Response:
    body = body_of(await json_body(request), "snapshot")
    volume_id = body.get("volume_id")
    if not isinstance(volume_id, str):
        raise invalid("volume_id is required.")
    name = text_field(body, "name") or text_field(body, "display_name")
    description = text_field(body, "description") or text_field(body, "display_description")
    metadata = metadata_field(body.get("metadata"))
    force = None if body.get("force") is None else as_bool(body["force"], "force")
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        context = enforce(request, "write", owner(volume))
        in_use_ok = force is True or (at_least(request, "3.66") and force is None)
        if at_least(request, "3.66") and force is False:
            raise invalid("The force flag is no longer supported; omit it.")
        allowed = ("available", "in-use") if in_use_ok else ("available",)
        if volume.status not in allowed or volume.migration_status in ("migrating", "starting"):
            raise invalid_volume(
                f"Volume {volume.id} status must be {' or '.join(allowed)} to take a snapshot "
                f"(it is {volume.status})."
            )
        volume_type = await session.get(VolumeType, volume.volume_type_id)
        type_name = volume_type.name if volume_type else None
    usage = snapshot_usage(type_name, volume.size)
    async with (
        quota_held(request, volume.project_id, usage, [type_name] if type_name else []),
        service(request).db.session() as session,
    ):
        snapshot = Snapshot(
            project_id=volume.project_id,
            user_id=context.user_id,
            volume_id=volume.id,
            volume_type_id=volume.volume_type_id,
            name=name,
            description=description,
            size=volume.size,
            status="creating",
            progress="0%",
            metadata_=metadata,
        )
        session.add(snapshot)
        await session.flush()
        current = await session.get(Volume, volume.id)
        assert current is not None
        payload = await volume_payload(session, current)
        rendered = snapshot_view(request, snapshot)
        snap = snapshot_payload(snapshot)
    await service(request).agents.cast(
        payload["host"], "create_snapshot", snapshot=snap, volume=payload
    )
    return JSONResponse({"snapshot": rendered}, status_code=202)


def _filtered(request: Request) -> Any:
    query = project_scope(request, select(Snapshot), Snapshot)
    for key, raw in request.query_params.items():
        name = key.rstrip("~")
        if name in ("name", "display_name"):
            fuzzy = key.endswith("~") and at_least(request, "3.34")
            query = query.where(Snapshot.name.contains(raw) if fuzzy else Snapshot.name == raw)
        elif name in ("status", "volume_id"):
            query = query.where(getattr(Snapshot, name) == raw)
        elif name in ("created_at", "updated_at") and at_least(request, "3.60"):
            query = query.where(time_filter(getattr(Snapshot, name), raw))
    return query


@routes.get("/v3/snapshots")
async def list_snapshots(request: Request) -> Response:
    query = _filtered(request)
    render = each(snapshot_view)
    return await list_collection(request, "snapshots", query, Snapshot, SORT_KEYS, render)


@routes.get("/v3/snapshots/detail")
async def list_snapshot_details(request: Request) -> Response:
    query, render = _filtered(request), each(snapshot_view)
    return await list_collection(request, "snapshots", query, Snapshot, SORT_KEYS, render)


@routes.get("/v3/snapshots/{snapshot_id}")
async def show_snapshot(request: Request) -> Response:
    async with service(request).db.session() as session:
        snapshot = await fetch(
            request, session, Snapshot, request.path_params["snapshot_id"], "Snapshot"
        )
    enforce(request, "read", owner(snapshot))
    return JSONResponse({"snapshot": snapshot_view(request, snapshot)})


@routes.put("/v3/snapshots/{snapshot_id}")
async def update_snapshot(request: Request) -> Response:
    body = body_of(await json_body(request), "snapshot")
    allowed = {"name", "description", "display_name", "display_description"}
    if not body or set(body) - allowed:
        raise invalid("Only name and description can be updated.")
    async with service(request).db.session() as session:
        snapshot = await fetch(
            request, session, Snapshot, request.path_params["snapshot_id"], "Snapshot"
        )
        enforce(request, "write", owner(snapshot))
        for api_name, column in (("name", "name"), ("display_name", "name"),
                                 ("description", "description"),
                                 ("display_description", "description")):  # fmt: skip
            if api_name in body:
                setattr(snapshot, column, text_field(body, api_name))
        await session.flush()
        rendered = snapshot_view(request, snapshot)
    return JSONResponse({"snapshot": rendered})


async def _start_delete(request: Request, snapshot: Snapshot, *, force: bool) -> None:
    allowed = None if force else ("available", "error")
    async with service(request).db.session() as session:
        query = update(Snapshot).where(Snapshot.id == snapshot.id)
        if allowed is not None:
            query = query.where(Snapshot.status.in_(allowed))
        changed = await session.execute(query.values(status="deleting"))
        if not affected(changed):
            raise invalid(
                f"Snapshot {snapshot.id} status must be available or error to delete it "
                f"(it is {snapshot.status})."
            )
        volume = await session.get(Volume, snapshot.volume_id)
        assert volume is not None
        payload = await volume_payload(session, volume)
        fresh = await session.get(Snapshot, snapshot.id)
        assert fresh is not None
        snap = snapshot_payload(fresh)
    await service(request).agents.cast(
        payload["host"], "delete_snapshot", snapshot=snap, volume=payload
    )


@routes.delete("/v3/snapshots/{snapshot_id}")
async def delete_snapshot(request: Request) -> Response:
    async with service(request).db.session() as session:
        snapshot = await fetch(
            request, session, Snapshot, request.path_params["snapshot_id"], "Snapshot"
        )
    enforce(request, "write", owner(snapshot))
    await _start_delete(request, snapshot, force=False)
    return Response(status_code=202)


@routes.post("/v3/snapshots/{snapshot_id}/action")
async def snapshot_action(request: Request) -> Response:
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise invalid("The action body must hold exactly one action.")
    [(name, argument)] = data.items()
    async with service(request).db.session() as session:
        snapshot = await fetch(
            request, session, Snapshot, request.path_params["snapshot_id"], "Snapshot"
        )
    if name == "os-force_delete":
        enforce(request, "admin", owner(snapshot))
        await _start_delete(request, snapshot, force=True)
        return Response(status_code=202)
    if name in ("os-reset_status", "os-update_snapshot_status"):
        enforce(request, "admin", owner(snapshot))
        status = argument.get("status") if isinstance(argument, dict) else None
        if status not in SNAPSHOT_STATUSES:
            raise invalid(f"Invalid status {status!r}.")
        async with service(request).db.session() as session:
            await session.execute(
                update(Snapshot).where(Snapshot.id == snapshot.id).values(status=status)
            )
        return Response(status_code=202)
    raise invalid(f"Action {name} is not supported.")


async def _load_metadata(session: AsyncSession, snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.metadata_ or {})


async def _store_metadata(
    session: AsyncSession, snapshot: Snapshot, values: dict[str, str]
) -> None:
    snapshot.metadata_ = dict(values)


add_metadata_routes(routes, "snapshots", "Snapshot", Snapshot, _load_metadata, _store_metadata)
