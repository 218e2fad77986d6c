"""``/os-services``: compute services with up/down from heartbeats, disable/enable,
forced down and delete (``openstack compute service``).

Before 2.53 services are addressed by host and binary (``PUT /os-services/disable``...) and
listed with small integer ids; from 2.53 by uuid (``PUT /os-services/{uuid}``).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import delete, func, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import as_bool, at_least, enforce, own, service
from onestack.compute.host_aggregates import zones_of_hosts
from onestack.compute.models import ComputeNode, Instance
from onestack.compute.models_admin import AggregateHost
from onestack.core.asgi.errors import BadRequest, Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.heartbeat import ServiceRecord

log = logging.getLogger(__name__)
routes = RouteTable()
COMPUTE_BINARY = "nova-compute"
INTERNAL_ZONE = "internal"
MAX_REASON = 255


def dashed(record_id: str) -> str:
    """A service record id as the uuid 2.53+ shows."""
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        return record_id


async def records_with_zones(request: Request) -> list[tuple[int, ServiceRecord, str]]:
    """Every service record in creation order, numbered from 1, with its zone."""
    compute = service(request)
    records = sorted(await compute.services.list(), key=lambda r: (r.created_at, r.id))
    async with compute.db.session() as session:
        zones = await zones_of_hosts(session, compute.config.default_availability_zone)
    default = compute.config.default_availability_zone
    return [
        (
            number,
            record,
            zones.get(record.host, default) if record.binary == COMPUTE_BINARY else INTERNAL_ZONE,
        )
        for number, record in enumerate(records, start=1)
    ]


def _view(request: Request, number: int, record: ServiceRecord, zone: str) -> dict[str, Any]:
    updated = record.last_seen_at or record.created_at
    view: dict[str, Any] = {
        "id": dashed(record.id) if at_least(request, "2.53") else number,
        "binary": record.binary,
        "host": record.host,
        "zone": zone,
        "status": "disabled" if record.disabled else "enabled",
        "state": "up" if record.up else "down",
        "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "disabled_reason": record.disabled_reason,
    }
    if at_least(request, "2.11"):
        view["forced_down"] = record.forced_down
    return view


async def _find(request: Request, service_id: str) -> tuple[int, ServiceRecord, str]:
    wanted = service_id.replace("-", "")
    for number, record, zone in await records_with_zones(request):
        if record.id.replace("-", "") == wanted or (
            not at_least(request, "2.53") and str(number) == service_id
        ):
            return number, record, zone
    raise NotFound(f"Service {service_id} could not be found.")


@routes.get("/v2.1/os-services")
async def list_services(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    host = request.query_params.get("host")
    binary = request.query_params.get("binary")
    views = [
        _view(request, number, record, zone)
        for number, record, zone in await records_with_zones(request)
        if (not host or record.host == host) and (not binary or record.binary == binary)
    ]
    return JSONResponse({"services": views})


def _reason(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_REASON:
        raise BadRequest(f"disabled_reason must be a string of 1 to {MAX_REASON} characters.")
    return value


@routes.put("/v2.1/os-services/{action}")
async def update_service(request: Request) -> Response:
    """2.53+: ``PUT /os-services/{uuid}``; before: ``PUT /os-services/<action>``."""
    enforce(request, "manage_hosts", own(request))
    action = request.path_params["action"]
    data = await json_body(request)
    if not isinstance(data, dict):
        raise BadRequest("The request body must be an object.")
    compute = service(request)
    if at_least(request, "2.53"):
        number, record, zone = await _find(request, action)
        unknown = set(data) - {"status", "disabled_reason", "forced_down"}
        if unknown or not data:
            raise BadRequest("Only status, disabled_reason and forced_down can be updated.")
        status = data.get("status")
        if status is not None and status not in ("enabled", "disabled"):
            raise BadRequest(f"Invalid status {status!r}: 'enabled' or 'disabled'.")
        if "disabled_reason" in data and status != "disabled":
            raise BadRequest("disabled_reason is only accepted with status 'disabled'.")
        reason = _reason(data["disabled_reason"]) if "disabled_reason" in data else None
        forced = as_bool(data["forced_down"], "forced_down") if "forced_down" in data else None
        if record.binary != COMPUTE_BINARY and forced is not None:
            raise BadRequest("Only nova-compute services can be forced down.")
        await compute.services.set_state(
            record.id,
            disabled=None if status is None else status == "disabled",
            disabled_reason=reason,
            forced_down=forced,
        )
        _, record, zone = await _find(request, action)
        return JSONResponse({"service": _view(request, number, record, zone)})
    return await _update_by_host(request, action, data)


async def _update_by_host(request: Request, action: str, data: dict[str, Any]) -> Response:
    actions = {"enable", "disable", "disable-log-reason"}
    if at_least(request, "2.11"):
        actions.add("force-down")
    if action not in actions:
        raise NotFound(f"Unknown action {action!r}.")
    host, binary = data.get("host"), data.get("binary")
    if not isinstance(host, str) or not isinstance(binary, str):
        raise BadRequest("'host' and 'binary' are required.")
    matches = [
        record
        for _, record, _ in await records_with_zones(request)
        if record.host == host and record.binary == binary
    ]
    if not matches:
        raise NotFound(f"Service {binary} on host {host} could not be found.")
    record = matches[0]
    answer: dict[str, Any] = {"host": host, "binary": binary}
    registry = service(request).services
    if action == "force-down":
        forced = as_bool(data.get("forced_down"), "forced_down")
        await registry.set_state(record.id, forced_down=forced)
        answer["forced_down"] = forced
    elif action == "enable":
        await registry.set_state(record.id, disabled=False)
        answer["status"] = "enabled"
    else:
        reason = _reason(data.get("disabled_reason")) if action == "disable-log-reason" else None
        await registry.set_state(record.id, disabled=True, disabled_reason=reason)
        answer["status"] = "disabled"
        if reason:
            answer["disabled_reason"] = reason
    return JSONResponse({"service": answer})


@routes.delete("/v2.1/os-services/{service_id}")
async def delete_service(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    _, record, _ = await _find(request, request.path_params["service_id"])
    compute = service(request)
    if record.binary == COMPUTE_BINARY:
        async with compute.db.session() as session:
            running = (
                await session.execute(
                    select(func.count(Instance.id)).where(
                        Instance.host == record.host, Instance.deleted.is_(False)
                    )
                )
            ).scalar_one()
            if running:
                raise Conflict(
                    f"Unable to delete compute service that is hosting instances. "
                    f"Migrate or delete the instances first. Host {record.host} has "
                    f"{running} instance(s)."
                )
            nodes = list(
                (
                    await session.execute(
                        select(ComputeNode.uuid).where(ComputeNode.host == record.host)
                    )
                ).scalars()
            )
            await session.execute(delete(ComputeNode).where(ComputeNode.host == record.host))
            # A host taken out of service leaves its aggregates (and so its zone), as in Nova.
            await session.execute(delete(AggregateHost).where(AggregateHost.host == record.host))
        for node_uuid in nodes:
            try:
                await compute.client.request(
                    "placement", "DELETE", f"/resource_providers/{node_uuid}"
                )
            except Exception:
                # The compute records are gone either way; a leftover provider gets no
                # allocations (no compute node points at it) and can be deleted by hand.
                log.exception("deleting the placement provider %s of %s", node_uuid, record.host)
    await compute.services.delete(record.id)
    return Response(status_code=204)
