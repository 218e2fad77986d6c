"""Volume transfers: ``/v3/volume-transfers`` (3.55) and ``/v3/os-volume-transfer``.

A project offers a volume (with its snapshots unless ``no_snapshots``); another
project accepts it with the auth key, which is shown once and stored only as a
salted hash. Quota moves with the volume: the receiver must have room.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import affected
from onestack.volume.api.common import (
    as_bool,
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
    own,
    owner,
    project_scope,
    service,
    text_field,
)
from onestack.volume.api.lookups import quota_held
from onestack.volume.lifecycle import invalid_volume
from onestack.volume.models import Snapshot, Transfer, Volume, VolumeType
from onestack.volume.usage import snapshot_usage, volume_usage
from onestack.volume.views import transfer_view

routes = RouteTable()

SORT_KEYS = {"created_at": "created_at", "id": "id", "name": "name"}


def _hash(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}{key}".encode()).hexdigest()


async def create_transfer(request: Request) -> Response:
    body = body_of(await json_body(request), "transfer")
    volume_id = body.get("volume_id")
    if not isinstance(volume_id, str):
        raise invalid("volume_id is required.")
    name = text_field(body, "name")
    no_snapshots = at_least(request, "3.55") and as_bool(body.get("no_snapshots", False),
                                                         "no_snapshots")  # fmt: skip
    auth_key = secrets.token_hex(8)
    salt = secrets.token_hex(8)
    async with service(request).db.session() as session:
        volume = await fetch(request, session, Volume, volume_id, "Volume")
        enforce(request, "write", owner(volume))
        if not no_snapshots:
            busy = await session.scalar(
                select(Snapshot.id)
                .where(Snapshot.volume_id == volume.id, Snapshot.status != "available")
                .limit(1)
            )
            if busy:
                raise invalid_volume("All of the volume's snapshots must be available.")
        changed = await session.execute(
            update(Volume)
            .where(Volume.id == volume.id, Volume.status == "available")
            .values(status="awaiting-transfer", previous_status="available")
        )
        if not affected(changed):
            raise invalid_volume(f"Status of volume must be available, but is {volume.status}.")
        transfer = Transfer(
            volume_id=volume.id,
            name=name,
            salt=salt,
            crypt_hash=_hash(salt, auth_key),
            source_project_id=volume.project_id,
            no_snapshots=no_snapshots,
        )
        session.add(transfer)
        await session.flush()
        rendered = transfer_view(request, transfer)
    return JSONResponse({"transfer": {**rendered, "auth_key": auth_key}}, status_code=202)


async def list_transfers(request: Request) -> Response:
    detail = request.url.path.endswith("/detail")
    query = select(Transfer).where(Transfer.accepted.is_(False))
    query = project_scope(request, query, Transfer, Transfer.source_project_id)

    def view(request: Request, row: Transfer) -> dict[str, Any]:
        return transfer_view(request, row, detail=detail)

    return await list_collection(request, "transfers", query, Transfer, SORT_KEYS, each(view))


async def _transfer(
    request: Request, session: AsyncSession, *, any_project: bool = False
) -> Transfer:
    ident = request.path_params["transfer_id"]
    row = await session.get(Transfer, ident)
    visible = (
        any_project
        or is_admin(request)
        or (row is not None and row.source_project_id == caller(request).project_id)
    )
    if row is None or row.accepted or not visible:
        raise not_found("Transfer", ident)
    return row


async def show_transfer(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _transfer(request, session)
    enforce(request, "read", {"project_id": row.source_project_id})
    return JSONResponse({"transfer": transfer_view(request, row)})


async def delete_transfer(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _transfer(request, session)
        enforce(request, "write", {"project_id": row.source_project_id})
        await session.execute(
            update(Volume)
            .where(Volume.id == row.volume_id, Volume.status == "awaiting-transfer")
            .values(status="available", previous_status=None)
        )
        await session.delete(row)
    return Response(status_code=202)


async def accept_transfer(request: Request) -> Response:
    accept = body_of(await json_body(request), "accept")
    key = accept.get("auth_key")
    if not isinstance(key, str):
        raise invalid("auth_key is required.")
    context = enforce(request, "write", own(request))
    receiver = context.project_id or ""
    async with service(request).db.session() as session:
        row = await _transfer(request, session, any_project=True)
        if not hmac.compare_digest(row.crypt_hash, _hash(row.salt, key)):
            raise BadRequest(
                f"Invalid auth key: Attempt to transfer {row.id} with invalid auth key."
            )
        volume = await session.get(Volume, row.volume_id)
        if volume is None or volume.status != "awaiting-transfer":
            raise invalid_volume("The volume is no longer awaiting a transfer.")
        volume_type = await session.get(VolumeType, volume.volume_type_id)
        type_name = volume_type.name if volume_type else None
        snapshots = (
            []
            if row.no_snapshots
            else list(
                (
                    await session.execute(select(Snapshot).where(Snapshot.volume_id == volume.id))
                ).scalars()
            )
        )
        giver, size, transfer_id, name = volume.project_id, volume.size, row.id, row.name
    taking = volume_usage(type_name, size)
    for snapshot in snapshots:
        for resource, amount in snapshot_usage(type_name, snapshot.size).items():
            taking[resource] = taking.get(resource, 0) + amount
    types = [type_name] if type_name else []
    async with (
        quota_held(request, receiver, taking, types),
        service(request).db.session() as session,
    ):
        moved = await session.execute(
            update(Volume)
            .where(Volume.id == volume.id, Volume.status == "awaiting-transfer")
            .values(
                project_id=receiver,
                user_id=context.user_id,
                status="available",
                previous_status=None,
            )
        )
        if not affected(moved):
            raise invalid_volume("The volume is no longer awaiting a transfer.")
        for snapshot in snapshots:
            await session.execute(
                update(Snapshot)
                .where(Snapshot.id == snapshot.id)
                .values(project_id=receiver, user_id=context.user_id)
            )
        accepted = await session.get(Transfer, transfer_id)
        if accepted is not None:
            await session.delete(accepted)
    await service(request).quotas.release(giver, taking)
    return JSONResponse(
        {
            "transfer": {
                "id": transfer_id,
                "name": name,
                "volume_id": volume.id,
                "links": transfer_view(request, row)["links"],
            }
        },
        status_code=202,
    )


for _base in ("/v3/volume-transfers", "/v3/os-volume-transfer"):
    routes.post(_base)(create_transfer)
    routes.get(_base)(list_transfers)
    routes.get(f"{_base}/detail")(list_transfers)
    routes.get(f"{_base}/{{transfer_id}}")(show_transfer)
    routes.delete(f"{_base}/{{transfer_id}}")(delete_transfer)
    routes.post(f"{_base}/{{transfer_id}}/accept")(accept_transfer)
