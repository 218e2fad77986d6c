"""``/os-server-groups``: affinity, anti-affinity and their soft forms, with the 2.64
``policy`` + ``rules`` (``max_server_per_host``) shape (``openstack server group``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import (
    as_bool,
    as_int,
    at_least,
    body_of,
    enforce,
    is_admin,
    own,
    service,
)
from onestack.compute.models_admin import ServerGroup
from onestack.compute.server_groups import find_group, members_of
from onestack.compute.user_quotas import UserQuotas
from onestack.core.asgi.errors import BadRequest, Forbidden, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.quota import QuotaExceeded

routes = RouteTable()
HARD_POLICIES = ("affinity", "anti-affinity")
SOFT_POLICIES = ("soft-affinity", "soft-anti-affinity")


async def _view(request: Request, session: AsyncSession, group: ServerGroup) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": group.uuid,
        "name": group.name,
        "members": await members_of(session, group.id),
    }
    if at_least(request, "2.64"):
        view["policy"] = group.policy
        view["rules"] = group.rules or {}
    else:
        view["policies"] = [group.policy]
        view["metadata"] = {}
    if at_least(request, "2.13"):
        view["project_id"] = group.project_id
        view["user_id"] = group.user_id
    return view


def _policy_and_rules(request: Request, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    allowed = HARD_POLICIES + (SOFT_POLICIES if at_least(request, "2.15") else ())
    if at_least(request, "2.64"):
        unknown = set(body) - {"name", "policy", "rules"}
        if unknown:
            raise BadRequest(
                f"Additional properties are not allowed ({', '.join(sorted(unknown))} "
                "was unexpected)"
            )
        policy = body.get("policy")
        rules = body.get("rules", {})
        if not isinstance(rules, dict) or set(rules) - {"max_server_per_host"}:
            raise BadRequest("rules may only hold max_server_per_host.")
        if rules and policy != "anti-affinity":
            raise BadRequest("Only anti-affinity policy supports rules.")
        if "max_server_per_host" in rules:
            rules = {
                "max_server_per_host": as_int(
                    rules["max_server_per_host"], "max_server_per_host", minimum=1
                )
            }
    else:
        unknown = set(body) - {"name", "policies"}
        if unknown:
            raise BadRequest(
                f"Additional properties are not allowed ({', '.join(sorted(unknown))} "
                "was unexpected)"
            )
        policies = body.get("policies")
        if not isinstance(policies, list) or len(policies) != 1:
            raise BadRequest("Invalid input for field/attribute policies: one policy expected.")
        policy, rules = policies[0], {}
    if policy not in allowed:
        raise BadRequest(
            f"Invalid input for field/attribute policy. Value: {policy}. "
            f"{policy!r} is not one of {list(allowed)}"
        )
    return policy, rules


@routes.get("/v2.1/os-server-groups")
async def list_groups(request: Request) -> Response:
    context = enforce(request, "read", own(request))
    params = request.query_params
    everyone = as_bool(params.get("all_projects", "false"), "all_projects") and is_admin(request)
    limit = as_int(params["limit"], "limit", minimum=0) if "limit" in params else None
    offset = as_int(params.get("offset", 0), "offset", minimum=0)
    query = select(ServerGroup).order_by(ServerGroup.id)
    if not everyone:
        query = query.where(ServerGroup.project_id == context.project_id)
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    async with service(request).db.session() as session:
        groups = list((await session.execute(query)).scalars())
        views = [await _view(request, session, group) for group in groups]
    return JSONResponse({"server_groups": views})


@routes.post("/v2.1/os-server-groups")
async def create_group(request: Request) -> Response:
    context = enforce(request, "write", own(request))
    body = body_of(await json_body(request), "server_group")
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise BadRequest("Invalid input for field/attribute name: 1 to 255 characters.")
    policy, rules = _policy_and_rules(request, body)
    compute = service(request)
    project = context.project_id or ""
    try:
        await UserQuotas(compute.db).check(project, context.user_id or "", {"server_groups": 1})
        async with (
            compute.quotas.hold(project, {"server_groups": 1}),
            compute.db.session() as session,
        ):
            group = ServerGroup(
                name=name,
                project_id=project,
                user_id=context.user_id or "",
                policy=policy,
                rules=rules,
            )
            session.add(group)
            await session.flush()
            view = await _view(request, session, group)
    except QuotaExceeded:
        raise Forbidden("Quota exceeded, too many server groups.") from None
    return JSONResponse({"server_group": view})


async def _visible(request: Request, session: AsyncSession, group_id: str) -> ServerGroup:
    group = await find_group(session, group_id)
    if group is None or (group.project_id != service_project(request) and not is_admin(request)):
        raise NotFound(f"Instance group {group_id} could not be found.")
    return group


def service_project(request: Request) -> str | None:
    """The caller's project."""
    return own(request)["project_id"]


@routes.get("/v2.1/os-server-groups/{group_id}")
async def show_group(request: Request) -> Response:
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        group = await _visible(request, session, request.path_params["group_id"])
        return JSONResponse({"server_group": await _view(request, session, group)})


@routes.delete("/v2.1/os-server-groups/{group_id}")
async def delete_group(request: Request) -> Response:
    enforce(request, "write", own(request))
    compute = service(request)
    async with compute.db.session() as session:
        group = await _visible(request, session, request.path_params["group_id"])
        project = group.project_id
        await session.delete(group)
    await compute.quotas.release(project, {"server_groups": 1})
    return Response(status_code=204)
