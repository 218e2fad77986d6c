"""``/v3/backups``: full and incremental backups into object storage, restore to a new or
an existing volume, export/import of the record, admin actions."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import APIError, BadRequest
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
)
from onestack.volume.api.lookups import default_type, quota_held
from onestack.volume.backups import (
    NoBackupService,
    backup_host,
    backup_payload,
    chain_of,
    start_restore,
    volume_meta,
)
from onestack.volume.lifecycle import invalid_volume
from onestack.volume.models import Backup, Snapshot, Volume
from onestack.volume.payloads import snapshot_payload, volume_payload
from onestack.volume.rpc import backup_topic
from onestack.volume.usage import backup_usage, volume_usage
from onestack.volume.views import backup_detail, backup_summary

routes = RouteTable()

SORT_KEYS = {k: k for k in ("created_at", "updated_at", "name", "size", "status", "id",
                            "volume_id", "data_timestamp")}  # fmt: skip
BACKUP_STATUSES = ("creating", "available", "deleting", "error", "restoring",
                   "error_deleting")  # fmt: skip
RECORD_SERVICE = "onestack.volume.backup.swift"


def invalid_backup(message: str) -> APIError:
    return BadRequest(f"Invalid backup: {message}")


def invalid_snapshot(message: str) -> APIError:
    return BadRequest(f"Invalid snapshot: {message}")


@routes.post("/v3/backups")
async def create_backup(request: Request) -> Response:
    body = body_of(await json_body(request), "backup")
    volume_id = body.get("volume_id")
    if not isinstance(volume_id, str):
        raise invalid("volume_id is required.")
    name = text_field(body, "name")
    description = text_field(body, "description")
    container = text_field(body, "container") or service(request).config.backup_container
    incremental = as_bool(body.get("incremental", False), "incremental")
    force = as_bool(body.get("force", False), "force")
    metadata = metadata_field(body.get("metadata")) if at_least(request, "3.43") else {}
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        context = enforce(request, "write", owner(volume))
        snapshot = None
        if body.get("snapshot_id"):
            snapshot = await fetch(request, session, Snapshot, str(body["snapshot_id"]), "Snapshot")
            if snapshot.volume_id != volume.id:
                raise invalid(f"Snapshot {snapshot.id} is not a snapshot of volume {volume.id}.")
            if snapshot.status != "available":
                raise invalid_snapshot(
                    f"Snapshot to be backed up must be available, but the current status is "
                    f'"{snapshot.status}".'
                )
        # A snapshot's backup reads the snapshot, never the (maybe attached) volume.
        allowed = ("available", "in-use") if force or snapshot else ("available",)
        if volume.status not in allowed:
            raise invalid_volume(
                f"Volume to be backed up must be available or in-use, but the current status "
                f'is "{volume.status}".' + ("" if force else " Use --force for in-use volumes.")
            )
        parent = None
        if incremental:
            parent = (
                await session.execute(
                    select(Backup)
                    .where(Backup.volume_id == volume.id, Backup.status == "available")
                    .order_by(Backup.data_timestamp.desc(), Backup.created_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if parent is None:
                raise invalid_backup("No backups available to do an incremental backup.")
        volume_host = volume.host
    try:
        host = await backup_host(service(request), volume_host)
    except NoBackupService as exc:
        raise APIError(str(exc), status=503) from None
    size = snapshot.size if snapshot else volume.size
    async with (
        quota_held(request, volume.project_id, backup_usage(size)),
        service(request).db.session() as session,
    ):
        if snapshot is None:
            changed = await session.execute(
                update(Volume)
                .where(Volume.id == volume.id, Volume.status.in_(allowed))
                .values(status="backing-up", previous_status=Volume.status)
            )
            if not affected(changed):
                raise invalid_volume("Volume status changed meanwhile; try again.")
        else:
            changed = await session.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot.id, Snapshot.status == "available")
                .values(status="backing-up")
            )
            if not affected(changed):
                raise invalid_snapshot("Snapshot status changed meanwhile; try again.")
        backup = Backup(
            project_id=volume.project_id,
            user_id=context.user_id,
            volume_id=volume.id,
            snapshot_id=snapshot.id if snapshot else None,
            name=name,
            description=description,
            status="creating",
            size=size,
            availability_zone=volume.availability_zone,
            host=host,
            container=container,
            parent_id=parent.id if parent else None,
            metadata_=metadata,
        )
        session.add(backup)
        if parent is not None:
            await session.execute(
                update(Backup)
                .where(Backup.id == parent.id)
                .values(num_dependent_backups=Backup.num_dependent_backups + 1)
            )
        await session.flush()
        backup.object_prefix = (
            f"volume_{volume.id}/{backup.id}/az_{volume.availability_zone}_backup_{backup.id}"
        )
        chain = await chain_of(session, backup)
        current = await session.get(Volume, volume.id)
        assert current is not None
        payload = await volume_payload(session, current)
        kept = volume_meta(current)
        source = snapshot_payload(snapshot) if snapshot else None
        rendered = backup_summary(request, backup)
    await service(request).bus.cast(
        backup_topic(host),
        "create_backup",
        chain=chain,
        volume=payload,
        volume_meta=kept,
        snapshot=source,
    )
    return JSONResponse({"backup": rendered}, status_code=202)


def _filtered(request: Request) -> Any:
    query = project_scope(request, select(Backup), Backup)
    for key, raw in request.query_params.items():
        if key in ("name", "status", "volume_id"):
            query = query.where(getattr(Backup, key) == raw)
    return query


@routes.get("/v3/backups")
async def list_backups(request: Request) -> Response:
    query = _filtered(request)
    return await list_collection(request, "backups", query, Backup, SORT_KEYS, each(backup_summary))


@routes.get("/v3/backups/detail")
async def list_backup_details(request: Request) -> Response:
    query = _filtered(request)
    render = each(backup_detail)
    return await list_collection(request, "backups", query, Backup, SORT_KEYS, render)


@routes.get("/v3/backups/{backup_id}")
async def show_backup(request: Request) -> Response:
    async with service(request).db.session() as session:
        backup = await fetch(request, session, Backup, request.path_params["backup_id"], "Backup")
    enforce(request, "read", owner(backup))
    return JSONResponse({"backup": backup_detail(request, backup)})


@routes.put("/v3/backups/{backup_id}")
async def update_backup(request: Request) -> Response:
    if not at_least(request, "3.9"):
        raise invalid("Updating a backup needs microversion 3.9 or later.")
    body = body_of(await json_body(request), "backup")
    allowed = {"name", "description"} | ({"metadata"} if at_least(request, "3.43") else set())
    if not body or set(body) - allowed:
        raise invalid(f"Only {', '.join(sorted(allowed))} can be updated.")
    async with service(request).db.session() as session:
        backup = await fetch(request, session, Backup, request.path_params["backup_id"], "Backup")
        enforce(request, "write", owner(backup))
        for name in ("name", "description"):
            if name in body:
                setattr(backup, name, text_field(body, name))
        if "metadata" in body:
            backup.metadata_ = metadata_field(body["metadata"])
        await session.flush()
        rendered = backup_detail(request, backup)
    return JSONResponse({"backup": rendered})


async def _start_delete(request: Request, backup_id: str, *, force: bool) -> None:
    async with service(request).db.session() as session:
        backup = await fetch(request, session, Backup, backup_id, "Backup")
        if backup.num_dependent_backups > 0:
            raise invalid_backup("Incremental backups exist for this backup.")
        allowed = BACKUP_STATUSES if force else ("available", "error")
        changed = await session.execute(
            update(Backup)
            .where(Backup.id == backup.id, Backup.status.in_(allowed))
            .values(status="deleting")
        )
        if not affected(changed):
            raise invalid_backup(
                f"Backup status must be available or error (it is {backup.status})."
            )
        host = backup.host
        payload = backup_payload(backup)
    if host is None:
        try:
            host = await backup_host(service(request), None)
        except NoBackupService as exc:
            raise APIError(str(exc), status=503) from None
    await service(request).bus.cast(backup_topic(host), "delete_backup", backup=payload)


@routes.delete("/v3/backups/{backup_id}")
async def delete_backup(request: Request) -> Response:
    async with service(request).db.session() as session:
        backup = await fetch(request, session, Backup, request.path_params["backup_id"], "Backup")
    enforce(request, "write", owner(backup))
    await _start_delete(request, backup.id, force=False)
    return Response(status_code=202)


@routes.post("/v3/backups/{backup_id}/restore")
async def restore_backup(request: Request) -> Response:
    body = body_of(await json_body(request), "restore")
    async with service(request).db.session() as session:
        backup = await fetch(request, session, Backup, request.path_params["backup_id"], "Backup")
        context = enforce(request, "write", owner(backup))
        if backup.status != "available":
            raise invalid_backup(f"Backup status must be available (it is {backup.status}).")
    target_id = body.get("volume_id")
    name = text_field(body, "name")
    if target_id:
        async with service(request).db.session() as session:
            volume = await fetch(request, session, Volume, str(target_id), "Volume")
            enforce(request, "write", owner(volume))
            if volume.size < backup.size:
                raise invalid_volume(
                    f"volume size {volume.size} is too small to restore backup of size "
                    f"{backup.size}."
                )
            changed = await session.execute(
                update(Volume)
                .where(Volume.id == volume.id, Volume.status == "available")
                .values(status="restoring-backup", previous_status="available")
            )
            if not affected(changed):
                raise invalid_volume(
                    f"Volume to restore into must be available (it is {volume.status})."
                )
            volume_name = volume.name
        await start_restore(service(request), backup.id, volume.id)
        return JSONResponse(
            {
                "restore": {
                    "backup_id": backup.id,
                    "volume_id": volume.id,
                    "volume_name": volume_name,
                }
            },
            status_code=202,
        )
    volume_name = name or f"restore_backup_{backup.id}"
    async with service(request).db.session() as session:
        volume_type = await default_type(request, session)
    project = context.project_id or backup.project_id
    async with (
        quota_held(
            request, project, volume_usage(volume_type.name, backup.size), [volume_type.name]
        ),
        service(request).db.session() as session,
    ):
        volume = Volume(
            project_id=project,
            user_id=context.user_id,
            name=volume_name,
            size=backup.size,
            status="creating",
            availability_zone=backup.availability_zone
            or service(request).config.default_availability_zone,
            volume_type_id=volume_type.id,
            backup_id=backup.id,
            admin_metadata={},
            image_metadata={},
        )
        session.add(volume)
        await session.flush()
    spec = {
        "size": backup.size,
        "extra_specs": dict(volume_type.extra_specs or {}),
        "availability_zone": volume.availability_zone,
        "source": {"kind": "backup", "backup_id": backup.id},
    }
    await service(request).scheduler.cast("create_volume", volume_id=volume.id, spec=spec)
    return JSONResponse(
        {"restore": {"backup_id": backup.id, "volume_id": volume.id, "volume_name": volume_name}},
        status_code=202,
    )


@routes.get("/v3/backups/{backup_id}/export_record")
async def export_record(request: Request) -> Response:
    enforce(request, "admin")
    async with service(request).db.session() as session:
        backup = await fetch(request, session, Backup, request.path_params["backup_id"], "Backup")
        if backup.status != "available":
            raise invalid_backup(f"Backup status must be available (it is {backup.status}).")
        chain = await chain_of(session, backup)
    record = {
        "chain": chain,
        "name": backup.name,
        "description": backup.description,
        "object_count": backup.object_count,
        "availability_zone": backup.availability_zone,
        "host": backup.host,
        "data_timestamp": backup.data_timestamp.isoformat(),
        "metadata": dict(backup.metadata_ or {}),
    }
    url = base64.b64encode(json.dumps(record).encode()).decode()
    return JSONResponse({"backup-record": {"backup_service": RECORD_SERVICE, "backup_url": url}})


@routes.post("/v3/backups/import_record")
async def import_record(request: Request) -> Response:
    context = enforce(request, "admin")
    body = body_of(await json_body(request), "backup-record")
    if body.get("backup_service") != RECORD_SERVICE:
        raise invalid(f"Unsupported backup service {body.get('backup_service')!r}.")
    try:
        record = json.loads(base64.b64decode(str(body.get("backup_url", "")), validate=True))
        chain = record["chain"]
        last = chain[-1]
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise invalid("backup_url is not a backup record exported by this cloud.") from None
    async with service(request).db.session() as session:
        parent_id = None
        for link in chain:
            existing = await session.get(Backup, link["id"])
            if existing is not None:
                if link is last:
                    raise APIError(f"Backup {link['id']} already exists.", status=400)
                parent_id = existing.id
                continue
            imported = Backup(
                id=link["id"],
                project_id=context.project_id or link.get("project_id", ""),
                user_id=context.user_id,
                volume_id=link["volume_id"],
                name=record.get("name") if link is last else None,
                description=record.get("description") if link is last else None,
                status="available",
                size=int(link["size"]),
                availability_zone=record.get("availability_zone"),
                host=record.get("host"),
                container=link["container"],
                object_prefix=link["object_prefix"],
                object_count=int(record.get("object_count", 0)) if link is last else 0,
                parent_id=parent_id,
                num_dependent_backups=0 if link is last else 1,
                data_timestamp=dt.datetime.fromisoformat(record["data_timestamp"]),
                metadata_=dict(record.get("metadata") or {}),
            )
            session.add(imported)
            await session.flush()
            parent_id = imported.id
        created = await session.get(Backup, last["id"])
        assert created is not None
        rendered = backup_summary(request, created)
    return JSONResponse({"backup": rendered}, status_code=201)


@routes.post("/v3/backups/{backup_id}/action")
async def backup_action(request: Request) -> Response:
    enforce(request, "admin")
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise invalid("The action body must hold exactly one action.")
    [(name, argument)] = data.items()
    backup_id = request.path_params["backup_id"]
    if name == "os-force_delete":
        await _start_delete(request, backup_id, force=True)
        return Response(status_code=202)
    if name == "os-reset_status":
        status = argument.get("status") if isinstance(argument, dict) else None
        if status not in ("available", "error"):
            raise invalid("A backup's status can be reset to available or error.")
        async with service(request).db.session() as session:
            backup = await fetch(request, session, Backup, backup_id, "Backup")
            backup.status = status
        return Response(status_code=202)
    raise invalid(f"Action {name} is not supported.")
