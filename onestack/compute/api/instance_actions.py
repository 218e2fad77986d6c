"""``/servers/{id}/os-instance-actions``: what was done to a server and the steps of each
action (``openstack server event list|show``)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import at_least, caller, is_admin, limit_marker, service
from onestack.compute.models import Instance, InstanceAction, InstanceActionEvent
from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()


def _iso(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value is not None else None


def host_id(project_id: str, host: str | None) -> str:
    """Nova's opaque host id: the same host looks the same only within one project."""
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


async def _server(request: Request, session: AsyncSession) -> Instance:
    server_id = request.path_params["server_id"]
    query = select(Instance).where(Instance.uuid == server_id)
    instance = (await session.execute(query)).scalar_one_or_none()
    hidden = instance is None or (instance.deleted and not at_least(request, "2.21"))
    target = {"project_id": instance.project_id, "user_id": instance.user_id} if instance else {}
    # Another project's server is not found rather than forbidden, as for servers.
    if (
        hidden
        or instance is None
        or not service(request).policy.check("compute:read", caller(request), target)
    ):
        raise NotFound(f"Instance {server_id} could not be found.")
    return instance


def _action_view(request: Request, action: InstanceAction) -> dict[str, Any]:
    view: dict[str, Any] = {
        "action": action.action,
        "instance_uuid": action.instance_uuid,
        "request_id": action.request_id,
        "user_id": action.user_id,
        "project_id": action.project_id,
        "start_time": _iso(action.start_time),
        "message": action.message,
    }
    if at_least(request, "2.58"):
        view["updated_at"] = _iso(action.updated_at)
    return view


@routes.get("/v2.1/servers/{server_id}/os-instance-actions")
async def list_actions(request: Request) -> Response:
    params = request.query_params
    limit, marker = limit_marker(request) if at_least(request, "2.58") else (None, None)
    async with service(request).db.session() as session:
        instance = await _server(request, session)
        query = (
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == instance.uuid)
            .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc())
        )
        actions = list((await session.execute(query)).scalars())
    if at_least(request, "2.58"):
        for name, keep in (
            ("changes-since", lambda a, t: _iso(a.updated_at) >= t),
            ("changes-before", lambda a, t: _iso(a.updated_at) <= t),
        ):
            if name in params:
                wanted = params[name].replace("Z", "").replace("+00:00", "")
                actions = [a for a in actions if keep(a, wanted)]
    if marker is not None:
        ids = [action.request_id for action in actions]
        if marker not in ids:
            raise BadRequest(f"Marker {marker} could not be found.")
        actions = actions[ids.index(marker) + 1 :]
    if limit is not None:
        actions = actions[:limit]
    return JSONResponse({"instanceActions": [_action_view(request, a) for a in actions]})


@routes.get("/v2.1/servers/{server_id}/os-instance-actions/{request_id}")
async def show_action(request: Request) -> Response:
    async with service(request).db.session() as session:
        instance = await _server(request, session)
        query = select(InstanceAction).where(
            InstanceAction.instance_uuid == instance.uuid,
            InstanceAction.request_id == request.path_params["request_id"],
        )
        action = (await session.execute(query.limit(1))).scalar_one_or_none()
        if action is None:
            raise NotFound(
                f"Action for request_id {request.path_params['request_id']} on instance "
                f"{instance.uuid} not found"
            )
        events = list(
            (
                await session.execute(
                    select(InstanceActionEvent)
                    .where(InstanceActionEvent.action_id == action.id)
                    .order_by(InstanceActionEvent.start_time, InstanceActionEvent.id)
                )
            ).scalars()
        )
    admin = is_admin(request)
    view = _action_view(request, action)
    if admin or at_least(request, "2.51"):
        shown = []
        for event in events:
            item: dict[str, Any] = {
                "event": event.event,
                "start_time": _iso(event.start_time),
                "finish_time": _iso(event.finish_time),
                "result": event.result,
            }
            if admin:
                item["traceback"] = event.traceback
            if at_least(request, "2.62"):
                item["hostId"] = host_id(instance.project_id, event.host)
                if admin:
                    item["host"] = event.host
            if at_least(request, "2.84"):
                item["details"] = event.details
            shown.append(item)
        view["events"] = shown
    return JSONResponse({"instanceAction": view})
