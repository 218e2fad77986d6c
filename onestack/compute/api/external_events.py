"""``/os-server-external-events``: what other services tell compute about a server
(``network-vif-plugged`` from the network service, ``volume-extended`` from block storage),
recorded as instance action events and handed to the server's agent."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.actions import open_action
from onestack.compute.api.common import caller, enforce, service
from onestack.compute.models import Instance
from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.bus.base import BusError

routes = RouteTable()

NAMES = {
    "network-changed", "network-vif-plugged", "network-vif-unplugged", "network-vif-deleted",
    "volume-extended", "power-update", "accelerator-request-bound", "volume-reimaged",
}  # fmt: skip
STATUSES = ("completed", "failed", "in-progress")


@routes.post("/v2.1/os-server-external-events")
async def create_events(request: Request) -> Response:
    enforce(request, "admin")
    data = await json_body(request)
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not events:
        raise BadRequest("Invalid input for field/attribute events.")
    compute = service(request)
    answered: list[dict[str, Any]] = []
    request_id = request.scope["state"].get("request_id") or ""
    context = caller(request)
    for event in events:
        if not isinstance(event, dict) or event.get("name") not in NAMES:
            raise BadRequest("Invalid input for field/attribute name.")
        status = event.get("status", "completed")
        if status not in STATUSES:
            raise BadRequest("Invalid input for field/attribute status.")
        uuid = str(event.get("server_uuid", ""))
        result = {**event, "status": status, "code": 200}
        async with compute.db.session() as session:
            server = (
                await session.execute(
                    select(Instance).where(Instance.uuid == uuid, Instance.deleted.is_(False))
                )
            ).scalar_one_or_none()
            if server is None:
                answered.append({**result, "code": 404, "status": "failed"})
                continue
            if not server.host:
                answered.append({**result, "code": 422, "status": "failed"})
                continue
            open_action(session, uuid, event["name"], request_id,
                        context.project_id or "", context.user_id or "")  # fmt: skip
        # The agent acts on what it waits for; an agent that is down waits for nothing.
        with contextlib.suppress(BusError):
            await compute.agents.call(
                server.host, "external_event", timeout=10.0, uuid=uuid, name=event["name"],
                tag=str(event.get("tag", "")), status=status,
            )  # fmt: skip
        answered.append(result)
    if all(item["code"] == 404 for item in answered):
        raise NotFound("No instances found for any event")
    code = 200 if all(item["code"] == 200 for item in answered) else 207
    return JSONResponse({"events": answered}, status_code=code)
