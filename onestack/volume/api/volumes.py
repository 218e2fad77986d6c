"""``/v3/volumes``: create (blank, from snapshot, volume, image or backup), list, show,
update, delete (with cascade), summary, and metadata."""

from __future__ import annotations

import ast
import math
from typing import Any

import httpx
from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import APIError
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import (
    as_bool,
    as_size,
    at_least,
    body_of,
    caller,
    each,
    enforce,
    fetch,
    invalid,
    list_collection,
    metadata_field,
    own,
    owner,
    project_scope,
    service,
    text_field,
    time_filter,
)
from onestack.volume.api.lookups import check_zone, default_type, find_type, quota_held
from onestack.volume.api.metadata import add_metadata_routes
from onestack.volume.lifecycle import delete_volume
from onestack.volume.models import (
    Attachment,
    Backup,
    Snapshot,
    Volume,
    VolumeMetadata,
    VolumeType,
)
from onestack.volume.payloads import snapshot_payload, volume_payload
from onestack.volume.usage import volume_usage
from onestack.volume.views import volume_detail, volume_summary

routes = RouteTable()

GIB = 1 << 30
SORT_KEYS = {k: k for k in ("created_at", "updated_at", "name", "size", "status", "id",
                            "availability_zone", "bootable")}  # fmt: skip
CLONABLE = ("available", "in-use")


async def render(
    request: Request, session: AsyncSession, volumes: list[Volume]
) -> list[dict[str, Any]]:
    """Full Cinder bodies of ``volumes``, their metadata, attachments and types loaded at once."""
    ids = [v.id for v in volumes]
    metadata: dict[str, dict[str, str]] = {i: {} for i in ids}
    attachments: dict[str, list[Attachment]] = {i: [] for i in ids}
    if ids:
        for row in (
            await session.execute(select(VolumeMetadata).where(VolumeMetadata.volume_id.in_(ids)))
        ).scalars():
            metadata[row.volume_id][row.key] = row.value
        for att in (
            await session.execute(select(Attachment).where(Attachment.volume_id.in_(ids)))
        ).scalars():
            attachments[att.volume_id].append(att)
    type_ids = {v.volume_type_id for v in volumes}
    types = {
        t.id: t
        for t in (
            await session.execute(select(VolumeType).where(VolumeType.id.in_(type_ids)))
        ).scalars()
    }
    return [
        volume_detail(
            request,
            v,
            metadata=metadata[v.id],
            attachments=attachments[v.id],
            volume_type=types.get(v.volume_type_id),
        )
        for v in volumes
    ]


async def render_one(request: Request, volume_id: str) -> dict[str, Any]:
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        return (await render(request, session, [volume]))[0]


# Create --------------------------------------------------------------------------------


async def _image(request: Request, image_id: str) -> dict[str, Any]:
    """The image, as the caller sees it (with the caller's token: tenancy holds)."""
    client = service(request).client
    try:
        url = f"{await client.endpoint('image')}/v2/images/{image_id}"
        response = await client.http.get(
            url, headers={"X-Auth-Token": caller(request).auth_token or ""}
        )
    except httpx.HTTPError as exc:
        raise APIError(f"The image service could not be reached: {exc}", status=503) from None
    if response.status_code == 404:
        raise invalid(f"Image {image_id} could not be found.")
    if response.status_code != 200:
        raise APIError(f"The image service answered {response.status_code}.", status=503)
    image: dict[str, Any] = response.json()
    if image.get("status") != "active":
        raise invalid(f"Image {image_id} is not active.")
    return image


def _image_min_size(image: dict[str, Any]) -> int:
    """GiB a volume needs for an image: its min_disk, and room for its virtual size."""
    virtual = image.get("virtual_size") or image.get("size") or 0
    return max(int(image.get("min_disk") or 0), math.ceil(int(virtual) / GIB), 1)


async def _hinted_hosts(session: AsyncSession, request: Request, ids: Any) -> list[str]:
    if ids is None:
        return []
    wanted = [ids] if isinstance(ids, str) else list(ids)
    hosts = []
    for volume_id in wanted:
        volume = await fetch(request, session, Volume, str(volume_id), "Volume")
        if volume.host:
            hosts.append(volume.host)
    return hosts


@routes.post("/v3/volumes")
async def create_volume(request: Request) -> Response:
    data = await json_body(request)
    body = body_of(data, "volume")
    context = enforce(request, "write", own(request))
    project = context.project_id or ""
    name = text_field(body, "name") or text_field(body, "display_name")
    description = text_field(body, "description") or text_field(body, "display_description")
    metadata = metadata_field(body.get("metadata"))
    size = None if body.get("size") is None else as_size(body["size"])
    hints = data.get("OS-SCH-HNT:scheduler_hints") or {}
    if not isinstance(hints, dict):
        raise invalid("scheduler hints must be an object.")
    image_ref = body.get("imageRef") or body.get("image_id")
    backup_ref = body.get("backup_id") if at_least(request, "3.47") else None
    sources = [k for k, v in (("snapshot_id", body.get("snapshot_id")),
               ("source_volid", body.get("source_volid")), ("imageRef", image_ref),
               ("backup_id", backup_ref)) if v]  # fmt: skip
    if len(sources) > 1:
        raise invalid(f"Only one of {', '.join(sources)} may be given.")
    source: dict[str, Any] = {"kind": "blank"}
    source_host = None
    inherited_type = None
    zone = body.get("availability_zone")
    if zone is not None and not isinstance(zone, str):
        raise invalid("availability_zone must be a string.")
    image_meta: dict[str, Any] | None = None
    if image_ref:
        image_meta = await _image(request, str(image_ref))
    async with service(request).db.session() as session:
        if body.get("snapshot_id"):
            snapshot = await fetch(request, session, Snapshot, str(body["snapshot_id"]), "Snapshot")
            if snapshot.status != "available":
                raise invalid(
                    f"Snapshot {snapshot.id} status must be available, not {snapshot.status}."
                )
            parent = await session.get(Volume, snapshot.volume_id)
            size = size or snapshot.size
            if size < snapshot.size:
                raise invalid(
                    f"Volume size '{size}'GB cannot be smaller than the snapshot size "
                    f"{snapshot.size}GB. They must be >= original snapshot size."
                )
            source = {"kind": "snapshot", "snapshot": snapshot_payload(snapshot)}
            source_host = parent.host if parent else None
            inherited_type = snapshot.volume_type_id
            zone = zone or (parent.availability_zone if parent else None)
        elif body.get("source_volid"):
            original = await fetch(request, session, Volume, str(body["source_volid"]), "Volume")
            if original.status not in CLONABLE or original.migration_status in (
                "migrating",
                "starting",
            ):
                raise invalid(
                    f"Volume {original.id} status must be available or in-use, "
                    f"not {original.status}."
                )
            size = size or original.size
            if size < original.size:
                raise invalid(
                    f"Volume size '{size}'GB cannot be smaller than the source volume size "
                    f"{original.size}GB. They must be >= original volume size."
                )
            source = {"kind": "volume", "volume": await volume_payload(session, original)}
            source_host = original.host
            inherited_type = original.volume_type_id
            zone = zone or original.availability_zone
        elif image_meta is not None:
            needed = _image_min_size(image_meta)
            if size is None:
                raise invalid("A size is required to create a volume from an image.")
            if size < needed:
                raise invalid(
                    f"Image {image_meta['id']} needs a volume of at least {needed}GB; "
                    f"{size}GB was asked for."
                )
            source = {"kind": "image", "image_id": image_meta["id"]}
        elif backup_ref:
            backup = await fetch(request, session, Backup, str(backup_ref), "Backup")
            if backup.status != "available":
                raise invalid(f"Backup {backup.id} status must be available, not {backup.status}.")
            size = size or backup.size
            if size < backup.size:
                raise invalid(
                    f"Volume size '{size}'GB cannot be smaller than the backup size "
                    f"{backup.size}GB."
                )
            source = {"kind": "backup", "backup_id": backup.id}
        if size is None:
            raise invalid("size must be given: an integer (in GiB) greater than 0.")
        if body.get("volume_type"):
            volume_type = await find_type(request, session, str(body["volume_type"]))
        elif inherited_type and (found := await session.get(VolumeType, inherited_type)):
            volume_type = found
        else:
            volume_type = await default_type(request, session)
        specs = dict(volume_type.extra_specs or {})
        multiattach = specs.get("multiattach", "").strip().lower() == "<is> true"
        if body.get("multiattach") is not None:
            multiattach = multiattach or as_bool(body["multiattach"], "multiattach")
        zone = zone or service(request).config.default_availability_zone
        await check_zone(request, session, zone)
        hint_spec = {
            "same_host": await _hinted_hosts(session, request, hints.get("same_host")),
            "different_host": await _hinted_hosts(session, request, hints.get("different_host")),
        }
        type_id, type_name = volume_type.id, volume_type.name
    async with (
        quota_held(request, project, volume_usage(type_name, size), [type_name]),
        service(request).db.session() as session,
    ):
        volume = Volume(
            project_id=project,
            user_id=context.user_id,
            name=name,
            description=description,
            size=size,
            status="creating",
            availability_zone=zone,
            volume_type_id=type_id,
            snapshot_id=body.get("snapshot_id"),
            source_volid=body.get("source_volid"),
            backup_id=backup_ref,
            image_id=image_meta["id"] if image_meta else None,
            multiattach=multiattach,
            admin_metadata={},
            image_metadata={},
        )
        session.add(volume)
        await session.flush()
        for key, value in metadata.items():
            session.add(VolumeMetadata(volume_id=volume.id, key=key, value=value))
        await session.flush()
        rendered = (await render(request, session, [volume]))[0]
    spec = {
        "size": size,
        "extra_specs": specs,
        "availability_zone": zone,
        "multiattach": multiattach,
        "source_host": source_host,
        "source": source,
        **hint_spec,
    }
    await service(request).scheduler.cast("create_volume", volume_id=volume.id, spec=spec)
    return JSONResponse({"volume": rendered}, status_code=202)


# List and show -------------------------------------------------------------------------


def _metadata_filter(raw: str) -> dict[str, str]:
    """``metadata={'k': 'v'}``: the CLI sends a Python dict's text (Cinder parses it so)."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise invalid(f"Invalid metadata filter {raw!r}.") from None
    if not isinstance(value, dict):
        raise invalid("The metadata filter must be a dict.")
    return {str(k): str(v) for k, v in value.items()}


async def _filtered(request: Request) -> Any:
    params = request.query_params
    query = project_scope(request, select(Volume), Volume)
    fuzzy = at_least(request, "3.34")
    for key, raw in params.items():
        name = key.rstrip("~")
        if name == "name" or name == "display_name":
            column = Volume.name
            query = query.where(
                column.contains(raw) if key.endswith("~") and fuzzy else column == raw
            )
        elif name in ("status", "availability_zone", "migration_status", "group_id"):
            query = query.where(getattr(Volume, name) == raw)
        elif name == "bootable":
            query = query.where(Volume.bootable.is_(as_bool(raw, "bootable")))
        elif name == "size":
            query = query.where(Volume.size == as_size(raw))
        elif name == "volume_type":
            async with service(request).db.session() as session:
                wanted = await find_type(request, session, raw)
            query = query.where(Volume.volume_type_id == wanted.id)
        elif name == "metadata":
            for meta_key, meta_value in _metadata_filter(raw).items():
                query = query.where(
                    exists().where(
                        VolumeMetadata.volume_id == Volume.id,
                        VolumeMetadata.key == meta_key,
                        VolumeMetadata.value == meta_value,
                    )
                )
        elif name in ("created_at", "updated_at") and at_least(request, "3.60"):
            query = query.where(time_filter(getattr(Volume, name), raw))
    return query


@routes.get("/v3/volumes")
async def list_volumes(request: Request) -> Response:
    query = await _filtered(request)
    return await list_collection(request, "volumes", query, Volume, SORT_KEYS, each(volume_summary))


@routes.get("/v3/volumes/detail")
async def list_volume_details(request: Request) -> Response:
    query = await _filtered(request)

    async def full(request: Request, rows: list[Any]) -> list[dict[str, Any]]:
        async with service(request).db.session() as session:
            return await render(request, session, rows)

    return await list_collection(request, "volumes", query, Volume, SORT_KEYS, full)


@routes.get("/v3/volumes/summary")
async def volume_summary_totals(request: Request) -> Response:
    enforce(request, "read", own(request))
    totals: Any = select(func.count(), func.coalesce(func.sum(Volume.size), 0))
    query = project_scope(request, totals, Volume)
    async with service(request).db.session() as session:
        count, total = (await session.execute(query)).one()
        body: dict[str, Any] = {"total_size": int(total), "total_count": int(count)}
        if at_least(request, "3.36"):
            pairs: Any = select(VolumeMetadata.key, VolumeMetadata.value).join(
                Volume, Volume.id == VolumeMetadata.volume_id
            )
            meta_query = project_scope(request, pairs, Volume)
            merged: dict[str, list[str]] = {}
            for key, value in (await session.execute(meta_query)).all():
                merged.setdefault(key, [])
                if value not in merged[key]:
                    merged[key].append(value)
            body["metadata"] = merged
    return JSONResponse({"volume-summary": body})


@routes.get("/v3/volumes/{volume_id}")
async def show_volume(request: Request) -> Response:
    volume_id = request.path_params["volume_id"]
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        enforce(request, "read", owner(volume))
        body = (await render(request, session, [volume]))[0]
    return JSONResponse({"volume": body})


@routes.put("/v3/volumes/{volume_id}")
async def update_volume(request: Request) -> Response:
    body = body_of(await json_body(request), "volume")
    volume_id = request.path_params["volume_id"]
    allowed = {"name", "description", "metadata", "display_name", "display_description"}
    unknown = set(body) - allowed
    if unknown:
        raise invalid(f"Update of {', '.join(sorted(unknown))} is not supported.")
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        enforce(request, "write", owner(volume))
        for api_name, column in (("name", "name"), ("display_name", "name"),
                                 ("description", "description"),
                                 ("display_description", "description")):  # fmt: skip
            if api_name in body:
                setattr(volume, column, text_field(body, api_name))
        if "metadata" in body:
            metadata = metadata_field(body["metadata"])
            await session.execute(
                delete(VolumeMetadata).where(VolumeMetadata.volume_id == volume.id)
            )
            for key, value in metadata.items():
                session.add(VolumeMetadata(volume_id=volume.id, key=key, value=value))
        await session.flush()
        rendered = (await render(request, session, [volume]))[0]
    return JSONResponse({"volume": rendered})


@routes.delete("/v3/volumes/{volume_id}")
async def delete_volume_route(request: Request) -> Response:
    volume_id = request.path_params["volume_id"]
    params = request.query_params
    cascade = as_bool(params.get("cascade", "false"), "cascade")
    force = as_bool(params.get("force", "false"), "force")
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        enforce(request, "admin" if force else "write", owner(volume))
    await delete_volume(service(request), volume_id, cascade=cascade, force=force)
    return Response(status_code=202)


# Metadata ------------------------------------------------------------------------------


async def _load_metadata(session: AsyncSession, volume: Volume) -> dict[str, str]:
    rows = await session.execute(
        select(VolumeMetadata.key, VolumeMetadata.value).where(
            VolumeMetadata.volume_id == volume.id
        )
    )
    return {k: v for k, v in rows.all()}


async def _store_metadata(session: AsyncSession, volume: Volume, values: dict[str, str]) -> None:
    await session.execute(delete(VolumeMetadata).where(VolumeMetadata.volume_id == volume.id))
    for key, value in values.items():
        session.add(VolumeMetadata(volume_id=volume.id, key=key, value=value))


add_metadata_routes(routes, "volumes", "Volume", Volume, _load_metadata, _store_metadata)
