"""``/v3/os-services`` (up/down from heartbeats, enable/disable), and the backends' view:
``/v3/scheduler-stats/get_pools`` and ``/v3/capabilities/{host}``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.heartbeat import ServiceRecord
from onestack.volume.api.common import at_least, enforce, invalid, iso, service, text_field
from onestack.volume.models import Backend
from onestack.volume.scheduler.manager import VOLUME_BINARY

routes = RouteTable()


def _view(request: Request, record: ServiceRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "binary": record.binary,
        "host": record.host,
        "zone": record.zone,
        "status": "disabled" if record.disabled else "enabled",
        "state": "up" if record.up else "down",
        "updated_at": iso(record.last_seen_at),
        "disabled_reason": record.disabled_reason,
    }
    if record.binary == VOLUME_BINARY:
        body.update({"replication_status": "disabled", "active_backend_id": None, "frozen": False})
    if at_least(request, "3.7"):
        body["cluster"] = None
    if at_least(request, "3.49") and record.binary == VOLUME_BINARY:
        body["backend_state"] = "up" if record.up else "down"
    return body


@routes.get("/v3/os-services")
async def list_services(request: Request) -> Response:
    enforce(request, "services")
    params = request.query_params
    records = await service(request).services.list(
        binary=params.get("binary"), host=params.get("host")
    )
    return JSONResponse({"services": [_view(request, r) for r in records]})


@routes.put("/v3/os-services/{action}")
async def update_service(request: Request) -> Response:
    enforce(request, "services")
    action = request.path_params["action"]
    if action not in ("enable", "disable", "disable-log-reason"):
        raise invalid(f"Service action {action} is not supported by this cloud.")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise invalid("The body must be an object.")
    host, binary = body.get("host"), body.get("binary")
    if not isinstance(host, str) or not isinstance(binary, str):
        raise invalid("host and binary are required.")
    reason = text_field(body, "disabled_reason") if action == "disable-log-reason" else None
    if action == "disable-log-reason" and not (reason and reason.strip()):
        raise invalid("Disabled reason contains invalid characters or is too long.")
    registry = service(request).services
    records = [r for r in await registry.list(binary=binary, host=host)]
    if not records:
        raise NotFound(f"Service {binary} on host {host} could not be found.")
    disabled = action != "enable"
    await registry.set_state(records[0].id, disabled=disabled, disabled_reason=reason)
    answer: dict[str, Any] = {
        "host": host,
        "binary": binary,
        "status": "disabled" if disabled else "enabled",
        "disabled": disabled,
    }
    if action == "disable-log-reason":
        answer["disabled_reason"] = reason
    return JSONResponse(answer)


def _pool(backend: Backend, detail: bool) -> dict[str, Any]:
    pool = backend.capabilities.get("volume_backend_name") or backend.host.partition("@")[2]
    body: dict[str, Any] = {"name": f"{backend.host}#{pool}"}
    if detail:
        body["capabilities"] = {
            **backend.capabilities,
            "pool_name": pool,
            "timestamp": iso(backend.updated_at),
        }
    return body


@routes.get("/v3/scheduler-stats/get_pools")
async def list_pools(request: Request) -> Response:
    enforce(request, "services")
    detail = request.query_params.get("detail", "false").lower() in ("true", "1")
    async with service(request).db.session() as session:
        backends = (await session.execute(select(Backend).order_by(Backend.host))).scalars()
        pools = [_pool(b, detail) for b in backends]
    return JSONResponse({"pools": pools})


@routes.get("/v3/capabilities/{host}")
async def show_capabilities(request: Request) -> Response:
    enforce(request, "services")
    host = request.path_params["host"].partition("#")[0]
    async with service(request).db.session() as session:
        backend = await session.get(Backend, host)
    if backend is None:
        raise NotFound(f"Host {host} could not be found.")
    caps = backend.capabilities
    return JSONResponse(
        {
            "namespace": f"OS::Storage::Capabilities::{host}",
            "volume_backend_name": caps.get("volume_backend_name"),
            "pool_name": caps.get("volume_backend_name"),
            "driver_version": caps.get("driver_version"),
            "storage_protocol": caps.get("storage_protocol"),
            "vendor_name": caps.get("vendor_name"),
            "visibility": "pool",
            "description": None,
            "display_name": None,
            "replication_targets": [],
            "properties": {
                "thin_provisioning": {
                    "title": "Thin Provisioning",
                    "description": "Sets thin provisioning.",
                    "type": "boolean",
                }
            },
        }
    )
