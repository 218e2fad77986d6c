"""``/v3/qos-specs``: QoS specs and their association with volume types.

Front-end specs (``consumer`` front-end or both) travel in the connection info
of every attach, where the compute host applies them as QEMU I/O throttles.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import Conflict
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import (
    as_bool,
    body_of,
    enforce,
    invalid,
    links,
    not_found,
    service,
)
from onestack.volume.models import QosSpecs, VolumeType
from onestack.volume.views import qos_view

routes = RouteTable()

CONSUMERS = ("front-end", "back-end", "both")
# Throttles QEMU understands; their values must be non-negative integers.
THROTTLES = {f"{scope}_{unit}_sec{suffix}" for scope in ("total", "read", "write")
             for unit in ("bytes", "iops") for suffix in ("", "_max")} | {
    "size_iops_sec", "total_bytes_sec_max_length", "total_iops_sec_max_length"}  # fmt: skip


def _specs(values: dict[str, Any]) -> dict[str, str]:
    specs = {}
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str | int) or isinstance(value, bool):
            raise invalid("QoS spec keys and values must be strings.")
        if key in THROTTLES and (not str(value).isdigit()):
            raise invalid(f"QoS spec {key} must be a non-negative integer.")
        specs[key] = str(value)
    return specs


async def _qos(request: Request, session: AsyncSession) -> QosSpecs:
    enforce(request, "manage_qos")
    ident = request.path_params["qos_id"]
    row = await session.get(QosSpecs, ident)
    if row is None:
        raise not_found("QoS spec", ident)
    return row


def _one(request: Request, row: QosSpecs) -> Response:
    return JSONResponse(
        {"qos_specs": qos_view(request, row), "links": links(request, "qos-specs", row.id)}
    )


@routes.get("/v3/qos-specs")
async def list_qos(request: Request) -> Response:
    enforce(request, "manage_qos")
    async with service(request).db.session() as session:
        rows = (await session.execute(select(QosSpecs).order_by(QosSpecs.created_at))).scalars()
        items = [qos_view(request, r) for r in rows]
    return JSONResponse({"qos_specs": items})


@routes.post("/v3/qos-specs")
async def create_qos(request: Request) -> Response:
    enforce(request, "manage_qos")
    body = dict(body_of(await json_body(request), "qos_specs"))
    name = body.pop("name", None)
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise invalid("QoS specs need a name of 1 to 255 characters.")
    consumer = body.pop("consumer", "back-end")
    if consumer not in CONSUMERS:
        raise invalid(f"consumer must be one of {', '.join(CONSUMERS)}.")
    row = QosSpecs(name=name.strip(), consumer=consumer, specs=_specs(body))
    try:
        async with service(request).db.session() as session:
            session.add(row)
    except IntegrityError:
        raise Conflict(f"QoS Specs {name} already exists.") from None
    return _one(request, row)


@routes.get("/v3/qos-specs/{qos_id}")
async def show_qos(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _qos(request, session)
    return _one(request, row)


@routes.put("/v3/qos-specs/{qos_id}")
async def update_qos(request: Request) -> Response:
    body = dict(body_of(await json_body(request), "qos_specs"))
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        changed: dict[str, Any] = {}
        if "consumer" in body:
            consumer = body.pop("consumer")
            if consumer not in CONSUMERS:
                raise invalid(f"consumer must be one of {', '.join(CONSUMERS)}.")
            row.consumer = consumer
            changed["consumer"] = consumer
        specs = _specs(body)
        row.specs = {**(row.specs or {}), **specs}
        changed.update(specs)
    return JSONResponse({"qos_specs": changed})


@routes.delete("/v3/qos-specs/{qos_id}")
async def delete_qos(request: Request) -> Response:
    force = as_bool(request.query_params.get("force", "false"), "force")
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        used = await session.scalar(
            select(VolumeType.id).where(VolumeType.qos_specs_id == row.id).limit(1)
        )
        if used and not force:
            raise invalid(f"QoS Specs {row.id} is still associated with entities.")
        await session.execute(
            update(VolumeType).where(VolumeType.qos_specs_id == row.id).values(qos_specs_id=None)
        )
        await session.delete(row)
    return Response(status_code=202)


@routes.put("/v3/qos-specs/{qos_id}/delete_keys")
async def delete_qos_keys(request: Request) -> Response:
    data = await json_body(request)
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise invalid("keys must be a list of strings.")
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        missing = [k for k in keys if k not in (row.specs or {})]
        if missing:
            raise not_found(f"QoS spec key {missing[0]} of", row.id)
        row.specs = {k: v for k, v in row.specs.items() if k not in keys}
    return Response(status_code=202)


@routes.get("/v3/qos-specs/{qos_id}/associations")
async def list_associations(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        types = (
            await session.execute(select(VolumeType).where(VolumeType.qos_specs_id == row.id))
        ).scalars()
        items = [{"association_type": "volume_type", "name": t.name, "id": t.id} for t in types]
    return JSONResponse({"qos_associations": items})


async def _volume_type(request: Request, session: AsyncSession) -> VolumeType:
    type_id = request.query_params.get("vol_type_id")
    if not type_id:
        raise invalid("vol_type_id is required.")
    found = await session.get(VolumeType, type_id)
    if found is None:
        raise not_found("Volume type", type_id)
    return found


@routes.get("/v3/qos-specs/{qos_id}/associate")
async def associate(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        volume_type = await _volume_type(request, session)
        if volume_type.qos_specs_id not in (None, row.id):
            raise invalid(
                f"Volume type {volume_type.id} is already associated with another qos specs: "
                f"{volume_type.qos_specs_id}"
            )
        volume_type.qos_specs_id = row.id
    return Response(status_code=202)


@routes.get("/v3/qos-specs/{qos_id}/disassociate")
async def disassociate(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        volume_type = await _volume_type(request, session)
        if volume_type.qos_specs_id == row.id:
            volume_type.qos_specs_id = None
    return Response(status_code=202)


@routes.get("/v3/qos-specs/{qos_id}/disassociate_all")
async def disassociate_all(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _qos(request, session)
        await session.execute(
            update(VolumeType).where(VolumeType.qos_specs_id == row.id).values(qos_specs_id=None)
        )
    return Response(status_code=202)
