"""``/servers/{id}/os-volume_attachments``: attach (Cinder attachment reserved here, then
connected and plugged by the server's agent), list, show, swap for another volume (the
agent mirrors the data), update ``delete_on_termination`` (2.85) and detach; and
``volumes_attached`` of server bodies."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute import vm_states
from onestack.compute.actions import open_action
from onestack.compute.api.common import (
    as_bool,
    as_int,
    at_least,
    body_of,
    caller,
    enforce,
    service,
)
from onestack.compute.api.lookups import check_state, check_unlocked, find_server
from onestack.compute.models import Instance
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.compute.payloads import instance_payload
from onestack.compute.volumes import Cinder, VolumeServiceError, bdm_payload, next_device
from onestack.core.asgi.errors import APIError, BadRequest, Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()

ATTACH_STATES = (vm_states.ACTIVE, vm_states.PAUSED, vm_states.STOPPED, vm_states.SUSPENDED,
                 vm_states.RESIZED)  # fmt: skip
# A swap copies the volume through the running guest's QEMU.
SWAP_STATES = (vm_states.ACTIVE, vm_states.PAUSED, vm_states.RESIZED)
MAX_TAG = 60


def attachment_view(request: Request, row: BlockDeviceMapping, *, listed: bool) -> dict[str, Any]:
    """One attachment as Nova shows it (``listed``: GET, where 2.89 drops ``id``)."""
    view: dict[str, Any] = {"device": row.device_name}
    if not (listed and at_least(request, "2.89")):
        view["id"] = row.volume_id
    view.update({"serverId": row.instance_uuid, "volumeId": row.volume_id})
    if at_least(request, "2.70"):
        view["tag"] = row.tag
    if at_least(request, "2.79"):
        view["delete_on_termination"] = row.delete_on_termination
    if listed and at_least(request, "2.89"):
        view["attachment_id"] = row.attachment_id
        view["bdm_uuid"] = row.uuid
    return view


async def volumes_attached(
    request: Request, session: AsyncSession, ids: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """``os-extended-volumes:volumes_attached`` of each server (2.3 adds
    ``delete_on_termination``)."""
    found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return found
    rows = (
        await session.execute(
            select(BlockDeviceMapping)
            .where(BlockDeviceMapping.instance_uuid.in_(ids))
            .order_by(BlockDeviceMapping.id)
        )
    ).scalars()
    with_flag = at_least(request, "2.3")
    for row in rows:
        entry: dict[str, Any] = {"id": row.volume_id}
        if with_flag:
            entry["delete_on_termination"] = row.delete_on_termination
        found[row.instance_uuid].append(entry)
    return found


def volume_error(exc: VolumeServiceError) -> APIError:
    """Block storage's refusal in Nova's words."""
    if exc.status == 404:
        return NotFound(exc.message)
    if exc.status == 400:
        return BadRequest(f"Invalid volume: {exc.message}")
    if exc.status == 413:
        return APIError(exc.message, status=403)
    return APIError(f"Block storage failed: {exc.message}", status=exc.status)


async def owned_volume(request: Request, volume_id: Any, project_id: str) -> dict[str, Any]:
    """The volume, when it is the server's project's (another project's is a 404)."""
    if not isinstance(volume_id, str) or not volume_id:
        raise BadRequest("Invalid input for field/attribute volumeId.")
    try:
        volume = await Cinder(service(request).client).volume(volume_id)
    except VolumeServiceError as exc:
        raise volume_error(exc) from None
    if volume is None or volume.get("os-vol-tenant-attr:tenant_id") != project_id:
        raise NotFound(f"Volume {volume_id} could not be found.")
    return volume


async def _mapping(session: AsyncSession, server: Instance, volume_id: str) -> BlockDeviceMapping:
    row = (
        await session.execute(
            select(BlockDeviceMapping).where(
                BlockDeviceMapping.instance_uuid == server.uuid,
                BlockDeviceMapping.volume_id == volume_id,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"volume_id not found: {volume_id}")
    return row


def check_on_host(server: Instance, action: str) -> str:
    """The server's host; 409 when it runs nowhere (shelved offloaded): no agent can plug
    anything."""
    if server.host is None:
        raise Conflict(f"Cannot '{action}' instance {server.uuid}: it is on no host")
    return server.host


def _request_id(request: Request) -> str:
    return str(request.scope["state"].get("request_id") or f"req-{uuid.uuid4()}")


@routes.get("/v2.1/servers/{server_id}/os-volume_attachments")
async def list_attachments(request: Request) -> Response:
    params = request.query_params
    limit = as_int(params["limit"], "limit") if "limit" in params else None
    offset = as_int(params.get("offset", 0), "offset")
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        rows = list(
            (
                await session.execute(
                    select(BlockDeviceMapping)
                    .where(BlockDeviceMapping.instance_uuid == server.uuid)
                    .order_by(BlockDeviceMapping.id)
                )
            ).scalars()
        )
    rows = rows[offset:]
    if limit is not None:
        rows = rows[:limit]
    return JSONResponse(
        {"volumeAttachments": [attachment_view(request, r, listed=True) for r in rows]}
    )


@routes.get("/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}")
async def show_attachment(request: Request) -> Response:
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        row = await _mapping(session, server, request.path_params["volume_id"])
    return JSONResponse({"volumeAttachment": attachment_view(request, row, listed=True)})


@routes.post("/v2.1/servers/{server_id}/os-volume_attachments")
async def attach_volume(request: Request) -> Response:
    compute = service(request)
    body = body_of(await json_body(request), "volumeAttachment")
    allowed = {"volumeId", "device"}
    if at_least(request, "2.49"):
        allowed.add("tag")
    if at_least(request, "2.79"):
        allowed.add("delete_on_termination")
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"Additional properties are not allowed ({sorted(unknown)[0]!r} "
                         "was unexpected)")  # fmt: skip
    tag = body.get("tag")
    if tag is not None and (not isinstance(tag, str) or not tag or len(tag) > MAX_TAG
                            or "/" in tag or "," in tag):  # fmt: skip
        raise BadRequest("Invalid input for field/attribute tag.")
    device = body.get("device")
    if device is not None and not isinstance(device, str):
        raise BadRequest("Invalid input for field/attribute device.")
    delete_on_termination = as_bool(
        body.get("delete_on_termination", False), "delete_on_termination"
    )
    volume_id = body.get("volumeId")
    async with compute.db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        check_unlocked(request, server)
        check_state(server, "attach_volume", ATTACH_STATES)
        host = check_on_host(server, "attach_volume")
        used = {
            row.device_name: row.volume_id
            for row in (
                await session.execute(
                    select(BlockDeviceMapping).where(
                        BlockDeviceMapping.instance_uuid == server.uuid
                    )
                )
            ).scalars()
        }
    volume = await owned_volume(request, volume_id, server.project_id)
    if volume["id"] in used.values():
        raise BadRequest(f"Invalid volume: volume {volume['id']} is already attached to "
                         f"instance {server.uuid}")  # fmt: skip
    cinder = Cinder(compute.client)
    try:
        attachment = await cinder.create_attachment(volume["id"], server.uuid)
    except VolumeServiceError as exc:
        raise volume_error(exc) from None
    request_id = _request_id(request)
    context = caller(request)
    try:
        async with compute.db.session() as session:
            row = BlockDeviceMapping(
                instance_uuid=server.uuid,
                volume_id=volume["id"],
                attachment_id=attachment["id"],
                device_name=next_device(set(used), device),
                source_type="volume",
                delete_on_termination=delete_on_termination,
                tag=tag,
                status="attaching",
            )
            session.add(row)
            open_action(session, server.uuid, "attach_volume", request_id,
                        context.project_id or "", context.user_id or "")  # fmt: skip
            await session.flush()
            view = attachment_view(request, row, listed=False)
            bdm = bdm_payload(row)
        await compute.agents.cast(
            host, "attach_volume", instance=instance_payload(server), bdm=bdm,
            request_id=request_id,
        )  # fmt: skip
    except BaseException:
        await cinder.delete_attachment(attachment["id"])
        raise
    return JSONResponse({"volumeAttachment": view})


@routes.put("/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}")
async def update_attachment(request: Request) -> Response:
    """Swap the attached volume for ``volumeId`` (another volume), or (2.85) change
    ``delete_on_termination`` of the attachment in place."""
    body = body_of(await json_body(request), "volumeAttachment")
    volume_id = request.path_params["volume_id"]
    new_volume = body.get("volumeId")
    if not isinstance(new_volume, str) or not new_volume:
        raise BadRequest("Invalid input for field/attribute volumeId.")
    swap = new_volume != volume_id
    if not swap and not at_least(request, "2.85"):
        raise BadRequest("Updating an attachment in place needs microversion 2.85 or later.")
    allowed = {"volumeId", "device"}
    if at_least(request, "2.85"):
        allowed |= {"tag", "serverId", "id", "delete_on_termination"}
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"Additional properties are not allowed ({sorted(unknown)[0]!r} "
                         "was unexpected)")  # fmt: skip
    if swap:
        enforce(request, "swap_volume")
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        check_unlocked(request, server)
        row = await _mapping(session, server, volume_id)
        for key, current in (("device", row.device_name), ("tag", row.tag),
                             ("serverId", server.uuid), ("id", volume_id)):  # fmt: skip
            if key in body and body[key] != current:
                raise BadRequest(f"The {key} of a volume attachment cannot be changed.")
        if "delete_on_termination" in body:
            row.delete_on_termination = as_bool(
                body["delete_on_termination"], "delete_on_termination"
            )
        if not swap:
            return Response(status_code=202)
        check_state(server, "swap_volume", SWAP_STATES)
        host = check_on_host(server, "swap_volume")
        if row.boot_index == 0:
            raise BadRequest("Swapping the root volume of a server is not supported.")
        if row.status != "attached":
            raise BadRequest(f"Invalid volume: volume {volume_id} is {row.status}, not "
                             "attached.")  # fmt: skip
    await _swap(request, server, host, row, new_volume)
    return Response(status_code=202)


async def _swap(
    request: Request, server: Instance, host: str, row: BlockDeviceMapping, new_volume_id: str
) -> None:
    """Reserve the new volume for the server and have its agent copy the old one onto it
    (Nova's swap: block storage's attachments API, the guest's disk mirrored then pivoted)."""
    compute = service(request)
    cinder = Cinder(compute.client)
    try:
        old = await cinder.volume(row.volume_id)
        new = await cinder.volume(new_volume_id)
    except VolumeServiceError as exc:
        raise volume_error(exc) from None
    if old is None:
        raise NotFound(f"Volume {row.volume_id} could not be found.")
    if new is None or new.get("os-vol-tenant-attr:tenant_id") != server.project_id:
        # The new volume is named in the body, not the URL: a 400, as Nova answers.
        raise BadRequest(f"Volume {new_volume_id} could not be found.")
    if new.get("attachments") or new.get("status") != "available":
        raise BadRequest(f"Invalid volume: new volume {new_volume_id} must be available (it "
                         f"is {new.get('status')}) in order to swap.")  # fmt: skip
    if int(new["size"]) < int(old["size"]):
        raise BadRequest("Invalid volume: New volume must be the same size or larger.")
    if old.get("multiattach") and len(old.get("attachments") or []) > 1:
        raise BadRequest("Swapping multi-attach volumes with more than one read/write "
                         "attachment is not supported.")  # fmt: skip
    try:
        attachment = await cinder.create_attachment(new_volume_id, server.uuid)
    except VolumeServiceError as exc:
        raise volume_error(exc) from None
    request_id = _request_id(request)
    context = caller(request)
    try:
        async with compute.db.session() as session:
            current = await session.get(BlockDeviceMapping, row.id)
            if current is None or current.status != "attached":
                raise Conflict(f"Volume {row.volume_id} changed meanwhile; try again.")
            current.status = "swapping"
            open_action(session, server.uuid, "swap_volume", request_id,
                        context.project_id or "", context.user_id or "")  # fmt: skip
            await session.flush()
            bdm = bdm_payload(current)
        await compute.agents.cast(
            host, "swap_volume", instance=instance_payload(server), bdm=bdm,
            new_volume_id=new_volume_id, new_attachment_id=attachment["id"],
            request_id=request_id,
        )  # fmt: skip
    except BaseException:
        await cinder.delete_attachment(attachment["id"])
        raise


@routes.delete("/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}")
async def detach_volume(request: Request) -> Response:
    compute = service(request)
    request_id = _request_id(request)
    context = caller(request)
    async with compute.db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        check_unlocked(request, server)
        check_state(server, "detach_volume", ATTACH_STATES)
        row = await _mapping(session, server, request.path_params["volume_id"])
        host = check_on_host(server, "detach_volume")
        if row.boot_index == 0:
            raise BadRequest("Can't detach root device volume")
        if row.status != "attached":
            raise Conflict(f"Volume {row.volume_id} is {row.status}; try again when it is "
                           "attached.")  # fmt: skip
        row.status = "detaching"
        open_action(session, server.uuid, "detach_volume", request_id,
                    context.project_id or "", context.user_id or "")  # fmt: skip
        await session.flush()
        bdm = bdm_payload(row)
        payload = instance_payload(server)
    await compute.agents.cast(
        host, "detach_volume", instance=payload, bdm=bdm, request_id=request_id
    )
    return Response(status_code=202)
