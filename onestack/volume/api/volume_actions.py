"""``POST /v3/volumes/{id}/action``: extend, retype, migrate, revert, bootable, readonly,
reset-status and force-delete (admin), upload-to-image, image metadata."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import APIError
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import affected
from onestack.volume import migration
from onestack.volume.api.common import (
    as_bool,
    as_size,
    at_least,
    caller,
    enforce,
    fetch,
    invalid,
    iso,
    metadata_field,
    owner,
    service,
    text_field,
)
from onestack.volume.api.lookups import find_type, quota_held
from onestack.volume.lifecycle import delete_volume, invalid_volume
from onestack.volume.models import Backend, Snapshot, Volume, VolumeType
from onestack.volume.payloads import backend_of, snapshot_payload, volume_payload
from onestack.volume.usage import growth_usage, type_usage

routes = RouteTable()

Action = Callable[[Request, Volume, Any], Awaitable[Response]]
ACTIONS: dict[str, tuple[str, Action]] = {}
VOLUME_STATUSES = (
    "creating", "available", "reserved", "attaching", "in-use", "detaching", "maintenance",
    "deleting", "awaiting-transfer", "error", "error_deleting", "backing-up",
    "restoring-backup", "error_backing-up", "error_restoring", "error_extending",
    "downloading", "uploading", "retyping", "extending", "reverting",
)  # fmt: skip
# An in-use volume moves by compute swapping its server onto the copy (migration.py).
MIGRATABLE = ("available", "in-use")
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx")


def action(name: str, rule: str = "write") -> Callable[[Action], Action]:
    """Register the handler of one action key, checked against policy ``rule``."""

    def register(handler: Action) -> Action:
        ACTIONS[name] = (rule, handler)
        return handler

    return register


@routes.post("/v3/volumes/{volume_id}/action")
async def volume_action(request: Request) -> Response:
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise invalid("The action body must hold exactly one action.")
    [(name, argument)] = data.items()
    if name not in ACTIONS:
        raise invalid(f"Action {name} is not supported.")
    rule, handler = ACTIONS[name]
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, request.path_params["volume_id"], "Volume")
    enforce(request, rule, owner(volume))
    return await handler(request, volume, argument)


def _member(argument: Any, name: str) -> dict[str, Any]:
    if not isinstance(argument, dict):
        raise invalid(f"{name} takes an object.")
    return argument


async def _start(
    session: AsyncSession, volume: Volume, allowed: tuple[str, ...], status: str
) -> None:
    """Move the volume from one of ``allowed`` to ``status``, or 400 if it is elsewhere."""
    if volume.migration_status in ("migrating", "starting"):
        raise invalid_volume("Volume is being migrated.")
    changed = await session.execute(
        update(Volume)
        .where(Volume.id == volume.id, Volume.status.in_(allowed))
        .values(status=status, previous_status=Volume.status)
    )
    if not affected(changed):
        raise invalid_volume(
            f"Volume status must be {' or '.join(allowed)} (it is {volume.status})."
        )


async def _type_name(session: AsyncSession, type_id: str | None) -> str | None:
    row = await session.get(VolumeType, type_id) if type_id else None
    return row.name if row else None


@action("os-extend")
async def extend(request: Request, volume: Volume, argument: Any) -> Response:
    new_size = as_size(_member(argument, "os-extend").get("new_size"), "new_size")
    if new_size <= volume.size:
        raise invalid(
            "New size for extend must be greater than current size. "
            f"(current: {volume.size}, extended: {new_size})."
        )
    allowed: tuple[str, ...] = ("available",)
    if at_least(request, "3.42"):
        async with service(request).db.session() as session:
            backend = await session.get(Backend, backend_of(volume.host) or "")
        if backend is not None and backend.capabilities.get("online_extend_support"):
            allowed = ("available", "in-use")
        elif volume.status == "in-use":
            raise invalid_volume("The volume's backend cannot extend attached volumes.")
    async with service(request).db.session() as session:
        type_name = await _type_name(session, volume.volume_type_id)
    usage = growth_usage(type_name, new_size - volume.size)
    async with (
        quota_held(request, volume.project_id, usage, [type_name] if type_name else []),
        service(request).db.session() as session,
    ):
        await _start(session, volume, allowed, "extending")
        row = await session.get(Volume, volume.id)
        assert row is not None
        # Remembered so that a restart mid-way can give the quota back (recovery.py).
        row.admin_metadata = {**(row.admin_metadata or {}), "extending_to": str(new_size)}
    await service(request).scheduler.cast("extend_volume", volume_id=volume.id, new_size=new_size)
    return Response(status_code=202)


@action("os-retype")
async def retype(request: Request, volume: Volume, argument: Any) -> Response:
    body = _member(argument, "os-retype")
    if not body.get("new_type"):
        raise invalid("new_type is required.")
    policy = body.get("migration_policy") or "never"
    if policy not in ("never", "on-demand"):
        raise invalid("migration_policy must be 'never' or 'on-demand'.")
    async with service(request).db.session() as session:
        new_type = await find_type(request, session, str(body["new_type"]))
        if new_type.id == volume.volume_type_id:
            raise invalid(f"Volume {volume.id} already has the type {new_type.name}.")
        has_snapshots = await session.scalar(
            select(Snapshot.id).where(Snapshot.volume_id == volume.id).limit(1)
        )
    if has_snapshots:
        raise invalid_volume("Volumes with snapshots cannot be retyped.")
    usage = type_usage(new_type.name, volume.size)
    async with (
        quota_held(request, volume.project_id, usage, [new_type.name]),
        service(request).db.session() as session,
    ):
        await _start(session, volume, ("available", "in-use"), "retyping")
    await service(request).scheduler.cast(
        "retype", volume_id=volume.id, new_type_id=new_type.id, migration_policy=policy
    )
    return Response(status_code=202)


@action("os-migrate_volume", rule="admin")
async def migrate(request: Request, volume: Volume, argument: Any) -> Response:
    body = _member(argument, "os-migrate_volume")
    host = body.get("host")
    if not isinstance(host, str) or not host:
        raise invalid("host is required: the destination backend (host@backend).")
    if backend_of(volume.host) == backend_of(host):
        raise invalid_volume("The destination is the volume's own backend.")
    async with service(request).db.session() as session:
        if volume.status not in MIGRATABLE:
            raise invalid_volume(
                f"Volume status must be available or in-use (it is {volume.status})."
            )
        changed = await session.execute(
            update(Volume)
            .where(Volume.id == volume.id, Volume.status.in_(MIGRATABLE))
            .where(
                (Volume.migration_status.is_(None))
                | (Volume.migration_status.in_(("success", "error")))
            )
            .values(migration_status="starting")
        )
        if not affected(changed):
            raise invalid_volume("Volume is already being migrated.")
    await service(request).scheduler.cast("migrate_volume", volume_id=volume.id, host=host)
    return Response(status_code=202)


@action("os-migrate_volume_completion", rule="admin")
async def migrate_completion(request: Request, volume: Volume, argument: Any) -> Response:
    """Compute ended the swap block storage asked for (an in-use volume migrating)."""
    body = _member(argument, "os-migrate_volume_completion")
    target_id = body.get("new_volume")
    if not isinstance(target_id, str) or not target_id:
        raise invalid("new_volume is required.")
    error = body.get("error", False)
    if not isinstance(error, bool):
        raise invalid("error must be a boolean.")
    async with service(request).db.session() as session:
        target = await session.get(Volume, target_id)
    if target is None or migration.source_of(target) != volume.id:
        raise invalid_volume(f"Volume {target_id} is not the migration destination of {volume.id}.")
    if volume.migration_status != "migrating":
        raise invalid_volume(f"Volume {volume.id} is not migrating.")
    if error:
        await migration.fail(service(request), volume.id, target_id, "compute could not swap")
    else:
        await migration.complete(service(request), volume.id, target_id)
    return JSONResponse({"save_volume_id": volume.id})


@action("revert")
async def revert(request: Request, volume: Volume, argument: Any) -> Response:
    if not at_least(request, "3.40"):
        raise invalid("Reverting to a snapshot needs microversion 3.40 or later.")
    snapshot_id = _member(argument, "revert").get("snapshot_id")
    if not isinstance(snapshot_id, str):
        raise invalid("snapshot_id is required.")
    async with service(request).db.session() as session:
        snapshot = await fetch(request, session, Snapshot, snapshot_id, "Snapshot")
        if snapshot.volume_id != volume.id:
            raise invalid(f"Snapshot {snapshot_id} is not a snapshot of volume {volume.id}.")
        latest = (
            await session.execute(
                select(Snapshot)
                .where(Snapshot.volume_id == volume.id)
                .order_by(Snapshot.created_at.desc(), Snapshot.id.desc())
                .limit(1)
            )
        ).scalar_one()
        if latest.id != snapshot.id:
            raise invalid_volume("A volume can only be reverted to its latest snapshot.")
        if snapshot.status != "available":
            raise invalid(f"Snapshot {snapshot_id} status must be available.")
        if snapshot.size != volume.size:
            raise invalid_volume("The volume was extended after the snapshot; it cannot revert.")
        await _start(session, volume, ("available",), "reverting")
        snapshot.status = "restoring"
        fresh = await session.get(Volume, volume.id)
        assert fresh is not None
        payload = await volume_payload(session, fresh)
        snap = snapshot_payload(snapshot)
    await service(request).agents.cast(
        payload["host"], "revert_to_snapshot", volume=payload, snapshot=snap
    )
    return Response(status_code=202)


@action("os-set_bootable")
async def set_bootable(request: Request, volume: Volume, argument: Any) -> Response:
    bootable = as_bool(_member(argument, "os-set_bootable").get("bootable"), "bootable")
    async with service(request).db.session() as session:
        row = await session.get(Volume, volume.id)
        assert row is not None
        row.bootable = bootable
    return Response(status_code=200)


@action("os-update_readonly_flag")
async def update_readonly(request: Request, volume: Volume, argument: Any) -> Response:
    readonly = as_bool(_member(argument, "os-update_readonly_flag").get("readonly"), "readonly")
    if volume.status not in ("available", "in-use"):
        raise invalid_volume("Volume status must be available or in-use.")
    async with service(request).db.session() as session:
        row = await session.get(Volume, volume.id)
        assert row is not None
        row.admin_metadata = {**(row.admin_metadata or {}), "readonly": str(readonly)}
    return Response(status_code=202)


@action("os-reset_status", rule="admin")
async def reset_status(request: Request, volume: Volume, argument: Any) -> Response:
    body = _member(argument, "os-reset_status")
    values: dict[str, Any] = {}
    if "status" in body:
        if body["status"] not in VOLUME_STATUSES:
            raise invalid(f"Invalid status {body['status']!r}.")
        values["status"] = body["status"]
    if "attach_status" in body:
        if body["attach_status"] not in ("attached", "detached"):
            raise invalid("attach_status must be attached or detached.")
        values["attach_status"] = body["attach_status"]
    if "migration_status" in body:
        values["migration_status"] = body["migration_status"] or None
    if not values:
        raise invalid("Must specify 'status', 'attach_status' or 'migration_status' for update.")
    async with service(request).db.session() as session:
        await session.execute(update(Volume).where(Volume.id == volume.id).values(**values))
    return Response(status_code=202)


@action("os-force_delete", rule="admin")
async def force_delete(request: Request, volume: Volume, argument: Any) -> Response:
    await delete_volume(service(request), volume.id, force=True)
    return Response(status_code=202)


async def _create_image(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """The image record the upload will fill, created as the caller (it owns the image)."""
    client = service(request).client
    try:
        url = f"{await client.endpoint('image')}/v2/images"
        response = await client.http.post(
            url, json=body, headers={"X-Auth-Token": caller(request).auth_token or ""}
        )
    except httpx.HTTPError as exc:
        raise APIError(f"The image service could not be reached: {exc}", status=503) from None
    if response.status_code != 201:
        raise invalid(f"The image service refused the image: {response.text[:200]}")
    created: dict[str, Any] = response.json()
    return created


@action("os-volume_upload_image")
async def upload_image(request: Request, volume: Volume, argument: Any) -> Response:
    body = _member(argument, "os-volume_upload_image")
    image_name = text_field(body, "image_name")
    if not image_name:
        raise invalid("image_name is required.")
    force = as_bool(body.get("force", False), "force")
    disk_format = body.get("disk_format") or "raw"
    if disk_format not in DISK_FORMATS:
        raise invalid(f"Invalid disk-format '{disk_format}' specified.")
    container_format = body.get("container_format") or "bare"
    allowed = ("available", "in-use") if force else ("available",)
    if volume.status not in allowed:
        raise invalid_volume(f"Volume status must be {' or '.join(allowed)}.")
    image_body: dict[str, Any] = {
        "name": image_name,
        "disk_format": disk_format,
        "container_format": container_format,
        "min_disk": volume.size,
    }
    if body.get("visibility") is not None:
        image_body["visibility"] = body["visibility"]
    if body.get("protected") is not None:
        image_body["protected"] = as_bool(body["protected"], "protected")
    image = await _create_image(request, image_body)
    async with service(request).db.session() as session:
        await _start(session, volume, allowed, "uploading")
        fresh = await session.get(Volume, volume.id)
        assert fresh is not None
        payload = await volume_payload(session, fresh)
        volume_type = await session.get(VolumeType, volume.volume_type_id)
    await service(request).agents.cast(
        payload["host"],
        "copy_volume_to_image",
        volume=payload,
        image_id=image["id"],
        disk_format=disk_format,
    )
    return JSONResponse(
        {
            "os-volume_upload_image": {
                "id": volume.id,
                "updated_at": iso(fresh.updated_at),
                "status": "uploading",
                "display_description": volume.description,
                "size": volume.size,
                "volume_type": {"id": volume_type.id, "name": volume_type.name}
                if volume_type
                else None,
                "image_id": image["id"],
                "container_format": container_format,
                "disk_format": disk_format,
                "image_name": image_name,
            }
        },
        status_code=202,
    )


@action("os-set_image_metadata")
async def set_image_metadata(request: Request, volume: Volume, argument: Any) -> Response:
    metadata = metadata_field(_member(argument, "os-set_image_metadata").get("metadata"))
    async with service(request).db.session() as session:
        row = await session.get(Volume, volume.id)
        assert row is not None
        row.image_metadata = {**(row.image_metadata or {}), **metadata}
        merged = dict(row.image_metadata)
    return JSONResponse({"metadata": merged})


@action("os-unset_image_metadata")
async def unset_image_metadata(request: Request, volume: Volume, argument: Any) -> Response:
    key = _member(argument, "os-unset_image_metadata").get("key")
    async with service(request).db.session() as session:
        row = await session.get(Volume, volume.id)
        assert row is not None
        if key not in (row.image_metadata or {}):
            raise invalid(f"Image metadata key {key!r} was not found.")
        row.image_metadata = {k: v for k, v in row.image_metadata.items() if k != key}
    return Response(status_code=200)


@action("os-show_image_metadata", rule="read")
async def show_image_metadata(request: Request, volume: Volume, argument: Any) -> Response:
    return JSONResponse({"metadata": dict(volume.image_metadata or {})})
