"""``/v3/attachments`` (3.27; complete 3.44): how compute attaches volumes.

Reserve (create without connector) → update with the compute host's connector,
which asks the volume's agent to export the volume and answers its
``connection_info`` → ``os-complete`` once the guest has the disk → delete on
detach, which ends the export. A volume that is not multiattach takes one
attachment at a time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import APIError
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.bus.base import BusError
from onestack.core.db import utcnow
from onestack.volume.api.common import (
    at_least,
    body_of,
    caller,
    each,
    enforce,
    fetch,
    invalid,
    is_admin,
    list_collection,
    not_found,
    owner,
    service,
)
from onestack.volume.lifecycle import invalid_volume
from onestack.volume.models import Attachment, Volume
from onestack.volume.payloads import volume_payload
from onestack.volume.views import attachment_view

routes = RouteTable()

SORT_KEYS = {"created_at": "created_at", "id": "id"}
ACTIVE = ("reserved", "attaching", "attached", "detaching")
RESERVABLE = ("available", "reserved", "in-use", "attaching")


def _minimum(request: Request) -> None:
    if not at_least(request, "3.27"):
        raise invalid("The attachments API needs microversion 3.27 or later.")


async def _attachment(
    request: Request, session: AsyncSession, ident: str | None = None
) -> tuple[Attachment, Volume]:
    """An attachment of the caller's project (the path's unless ``ident``) and its volume."""
    ident = ident or request.path_params["attachment_id"]
    attachment = await session.get(Attachment, ident)
    if attachment is None or (
        not is_admin(request) and attachment.project_id != caller(request).project_id
    ):
        raise not_found("Attachment", ident)
    volume = await session.get(Volume, attachment.volume_id)
    if volume is None:
        raise not_found("Attachment", ident)
    return attachment, volume


def _connector(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("host"), str):
        raise invalid("connector must be an object with the compute host's name in 'host'.")
    return value


async def _connect(
    request: Request, attachment_id: str, connector: dict[str, Any], mode: str | None
) -> Attachment:
    """Export the volume to the connector's host and record the connection."""
    async with service(request).db.session() as session:
        _, volume = await _attachment(request, session, attachment_id)
        if volume.host is None:
            raise invalid_volume("The volume has no backend yet.")
        payload = await volume_payload(session, volume)
    try:
        info = await service(request).agents.call(
            payload["host"], "initialize_connection", volume=payload, connector=connector
        )
    except BusError as exc:
        raise APIError(f"The volume's backend could not export it: {exc}", status=500) from None
    readonly = payload["admin_metadata"].get("readonly") == "True"
    attach_mode = "ro" if readonly or mode == "ro" or connector.get("mode") == "ro" else "rw"
    info = {**info, "attachment_id": attachment_id}
    info["data"] = {**info.get("data", {}), "access_mode": attach_mode}
    async with service(request).db.session() as session:
        row = await session.get(Attachment, attachment_id)
        if row is None:
            raise not_found("Attachment", attachment_id)
        row.connector = connector
        row.connection_info = info
        row.attached_host = connector.get("host")
        row.mountpoint = connector.get("mountpoint")
        row.attach_mode = attach_mode
        row.attach_status = "attaching"
        await session.execute(
            update(Volume)
            .where(Volume.id == row.volume_id, Volume.status.in_(("reserved", "available")))
            .values(status="attaching")
        )
        await session.flush()
        return row


@routes.post("/v3/attachments")
async def create_attachment(request: Request) -> Response:
    _minimum(request)
    body = body_of(await json_body(request), "attachment")
    volume_id = body.get("volume_uuid")
    if not isinstance(volume_id, str):
        raise invalid("volume_uuid is required.")
    instance = body.get("instance_uuid")
    if instance is not None and not isinstance(instance, str):
        raise invalid("instance_uuid must be a string.")
    mode = body.get("mode") if at_least(request, "3.54") else None
    if mode not in (None, "rw", "ro"):
        raise invalid("mode must be rw or ro.")
    connector = _connector(body["connector"]) if body.get("connector") else None
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        enforce(request, "write", owner(volume))
        others = await session.scalar(
            select(func.count())
            .select_from(Attachment)
            .where(Attachment.volume_id == volume.id, Attachment.attach_status.in_(ACTIVE))
        )
        if volume.status not in RESERVABLE or (others and not volume.multiattach):
            raise invalid_volume(
                f"Volume {volume.id} status must be available or downloading to reserve, but "
                f"the current status is {volume.status}."
            )
        if volume.migration_status in ("migrating", "starting"):
            raise invalid_volume("Volume is being migrated.")
        attachment = Attachment(
            volume_id=volume.id,
            project_id=volume.project_id,
            instance_uuid=instance,
            attach_status="reserved",
            attach_mode=mode or "rw",
        )
        session.add(attachment)
        await session.execute(
            update(Volume)
            .where(Volume.id == volume.id, Volume.status == "available")
            .values(status="reserved")
        )
        await session.flush()
    if connector is not None:
        attachment = await _connect(request, attachment.id, connector, mode)
    return JSONResponse({"attachment": attachment_view(attachment)})


@routes.put("/v3/attachments/{attachment_id}")
async def update_attachment(request: Request) -> Response:
    _minimum(request)
    body = body_of(await json_body(request), "attachment")
    connector = _connector(body.get("connector"))
    async with service(request).db.session() as session:
        attachment, volume = await _attachment(request, session)
        enforce(request, "write", owner(volume))
        if attachment.attach_status not in ("reserved", "attaching", "attached"):
            raise invalid(f"Attachment {attachment.id} is {attachment.attach_status}.")
    updated = await _connect(request, attachment.id, connector, None)
    return JSONResponse({"attachment": attachment_view(updated)})


@routes.post("/v3/attachments/{attachment_id}/action")
async def attachment_action(request: Request) -> Response:
    if not at_least(request, "3.44"):
        raise invalid("Completing an attachment needs microversion 3.44 or later.")
    data = await json_body(request)
    if not isinstance(data, dict) or list(data) != ["os-complete"]:
        raise invalid("The only attachment action is os-complete.")
    async with service(request).db.session() as session:
        attachment, volume = await _attachment(request, session)
        enforce(request, "write", owner(volume))
        if attachment.connection_info is None:
            raise invalid(f"Attachment {attachment.id} has no connection yet.")
        attachment.attach_status = "attached"
        attachment.attach_time = utcnow()
        volume.status = "in-use"
        volume.attach_status = "attached"
    return Response(status_code=204)


@routes.delete("/v3/attachments/{attachment_id}")
async def delete_attachment(request: Request) -> Response:
    _minimum(request)
    async with service(request).db.session() as session:
        attachment, volume = await _attachment(request, session)
        enforce(request, "write", owner(volume))
        connector = attachment.connector
        payload = await volume_payload(session, volume) if volume.host else None
    if connector and payload is not None:
        try:
            await service(request).agents.call(
                payload["host"], "terminate_connection", volume=payload, connector=connector
            )
        except BusError as exc:
            raise APIError(
                f"The volume's backend could not end the export: {exc}", status=500
            ) from None
    async with service(request).db.session() as session:
        row = await session.get(Attachment, attachment.id)
        if row is not None:
            await session.delete(row)
            await session.flush()
        remaining = list(
            (
                await session.execute(
                    select(Attachment).where(Attachment.volume_id == attachment.volume_id)
                )
            ).scalars()
        )
        current = await session.get(Volume, attachment.volume_id)
        if current is not None:
            if any(a.attach_status == "attached" for a in remaining):
                current.status, current.attach_status = "in-use", "attached"
            elif remaining:
                current.status, current.attach_status = "reserved", "detached"
            elif current.status in ("in-use", "reserved", "attaching", "detaching"):
                current.status, current.attach_status = "available", "detached"
        items = [attachment_view(a) for a in remaining]
    return JSONResponse({"attachments": items})


def _filtered(request: Request) -> Any:
    query = select(Attachment)
    if not is_admin(request) or "all_tenants" not in request.query_params:
        query = query.where(Attachment.project_id == caller(request).project_id)
    params = request.query_params
    if "volume_id" in params:
        query = query.where(Attachment.volume_id == params["volume_id"])
    if "instance_id" in params:
        query = query.where(Attachment.instance_uuid == params["instance_id"])
    if "status" in params:
        query = query.where(Attachment.attach_status == params["status"])
    return query


@routes.get("/v3/attachments")
async def list_attachments(request: Request) -> Response:
    _minimum(request)
    render = each(lambda _request, row: attachment_view(row, detail=False))
    query = _filtered(request)
    return await list_collection(request, "attachments", query, Attachment, SORT_KEYS, render)


@routes.get("/v3/attachments/detail")
async def list_attachment_details(request: Request) -> Response:
    _minimum(request)
    render = each(lambda _request, row: attachment_view(row))
    query = _filtered(request)
    return await list_collection(request, "attachments", query, Attachment, SORT_KEYS, render)


@routes.get("/v3/attachments/{attachment_id}")
async def show_attachment(request: Request) -> Response:
    _minimum(request)
    async with service(request).db.session() as session:
        attachment, volume = await _attachment(request, session)
    enforce(request, "read", owner(volume))
    return JSONResponse({"attachment": attachment_view(attachment)})
