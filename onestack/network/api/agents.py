"""``/v2.0/agents``: the data-plane agents, alive while their heartbeats arrive."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import BadRequest, Conflict
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.heartbeat import ServiceRecord
from onestack.network.api.common import body_of, enforce, is_admin, not_found, service
from onestack.network.views import iso_time

routes = RouteTable()
AGENT_TYPES = {"linuxbridge": "Linux bridge agent"}


def _view(request: Request, record: ServiceRecord) -> dict[str, Any]:
    network = service(request)
    driver = network.driver
    configurations = network.agent_configurations.get(record.host) or {
        "driver": driver.name,
        "network_types": sorted(driver.network_types),
    }
    return {
        "id": record.id,
        "agent_type": AGENT_TYPES.get(driver.name, f"{driver.name} agent"),
        "binary": record.binary,
        "host": record.host,
        "topic": record.topic,
        "alive": record.up,
        "admin_state_up": not record.disabled,
        "availability_zone": record.zone,
        "description": record.disabled_reason,
        "configurations": configurations,
        "created_at": iso_time(record.created_at),
        "started_at": iso_time(record.created_at),
        "heartbeat_timestamp": iso_time(record.last_seen_at),
        "resources_synced": None,
    }


async def _record(request: Request) -> ServiceRecord:
    agent_id = request.path_params["agent_id"]
    for record in await service(request).agents.list():
        if record.id == agent_id:
            return record
    raise not_found("agent", agent_id)


@routes.get("/v2.0/agents")
async def list_agents(request: Request) -> Response:
    if not is_admin(request):
        # Neutron filters what a project may not see: an empty list, not a 403.
        return JSONResponse({"agents": []})
    enforce(request, "agents")
    q = request.query_params
    records = await service(request).agents.list(host=q.get("host"))
    items = [_view(request, r) for r in records]
    if "alive" in q:
        items = [i for i in items if str(i["alive"]).lower() == q["alive"].lower()]
    return JSONResponse({"agents": items})


@routes.get("/v2.0/agents/{agent_id}")
async def show_agent(request: Request) -> Response:
    enforce(request, "agents")
    return JSONResponse({"agent": _view(request, await _record(request))})


@routes.put("/v2.0/agents/{agent_id}")
async def update_agent(request: Request) -> Response:
    enforce(request, "agents")
    body = body_of(await json_body(request), "agent")
    record = await _record(request)
    if "admin_state_up" in body and not isinstance(body["admin_state_up"], bool):
        raise BadRequest("admin_state_up must be a boolean.")
    disabled = not body.get("admin_state_up", not record.disabled)
    reason = body.get("description", record.disabled_reason)
    await service(request).agents.set_state(record.id, disabled=disabled, disabled_reason=reason)
    return JSONResponse({"agent": _view(request, await _record(request))})


@routes.delete("/v2.0/agents/{agent_id}")
async def delete_agent(request: Request) -> Response:
    enforce(request, "agents")
    record = await _record(request)
    if record.up:
        raise Conflict(
            f"Agent {record.id} is alive; stop it before deleting it.", type="AgentInUse"
        )
    await service(request).agents.delete(record.id)
    return Response(status_code=204)
