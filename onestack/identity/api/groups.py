"""``/v3/groups`` and group membership."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import committed, enforce, get_or_404, json, no_content, service
from onestack.identity.api.crud import apply_changes, filtered, flush_unique
from onestack.identity.models import Assignment, Domain, Group, GroupMembership, User
from onestack.identity.schemas import GroupRequest

routes = RouteTable()


@routes.post("/v3/groups")
async def create_group(request: Request) -> Response:
    context = enforce(request, "create_group")
    body = (await body_as(request, GroupRequest)).group
    if not body.name:
        raise BadRequest("Invalid input for field 'name': a group needs a name.")
    identity = service(request)
    domain_id = body.domain_id or (context.token.project_domain_id if context.token else None)
    domain_id = domain_id or "default"
    async with identity.db.session() as session:
        if await session.get(Domain, domain_id) is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
        group = Group(name=body.name, domain_id=domain_id, description=body.description or "")
        session.add(group)
        await flush_unique(session, "group", body.name)
        result = views.group(request, group)
    return json({"group": result}, 201)


@routes.get("/v3/groups")
async def list_groups(request: Request) -> Response:
    enforce(request, "list_groups", {"target.domain_id": request.query_params.get("domain_id")})
    query = filtered(select(Group), Group, request, ("name", "domain_id"))
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(Group.name))).scalars()
        items = [views.group(request, g) for g in rows]
    return json(views.collection(request, "groups", items))


@routes.get("/v3/groups/{group_id}")
async def get_group(request: Request) -> Response:
    async with service(request).db.session() as session:
        group = await get_or_404(session, Group, request.path_params["group_id"], "group")
        enforce(request, "get_group", {"target.domain_id": group.domain_id})
        return json({"group": views.group(request, group)})


@routes.patch("/v3/groups/{group_id}")
async def update_group(request: Request) -> Response:
    enforce(request, "update_group")
    body = (await body_as(request, GroupRequest)).group
    async with service(request).db.session() as session:
        group = await get_or_404(session, Group, request.path_params["group_id"], "group")
        if body.domain_id not in (None, group.domain_id):
            raise BadRequest("A group cannot move to another domain.")
        apply_changes(group, body, ("name", "description"))
        await flush_unique(session, "group", body.name)
        result = views.group(request, group)
    return json({"group": result})


@routes.delete("/v3/groups/{group_id}")
async def delete_group(request: Request) -> Response:
    enforce(request, "delete_group")
    identity = service(request)
    async with identity.db.session() as session:
        group = await get_or_404(session, Group, request.path_params["group_id"], "group")
        members = await session.execute(
            select(GroupMembership.user_id).where(GroupMembership.group_id == group.id)
        )
        for user_id in members.scalars():
            await identity.tokens.revoke(session, user_id=user_id)
        await session.execute(delete(Assignment).where(Assignment.actor_id == group.id))
        await session.execute(delete(GroupMembership).where(GroupMembership.group_id == group.id))
        await session.delete(group)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.get("/v3/groups/{group_id}/users")
async def list_group_users(request: Request) -> Response:
    enforce(request, "list_users_in_group")
    async with service(request).db.session() as session:
        await get_or_404(session, Group, request.path_params["group_id"], "group")
        rows = await session.execute(
            select(User)
            .join(GroupMembership, GroupMembership.user_id == User.id)
            .where(GroupMembership.group_id == request.path_params["group_id"])
            .order_by(User.name)
        )
        items = [views.user(request, u) for u in rows.scalars()]
    return json(views.collection(request, "users", items))


async def _membership(
    request: Request, session: AsyncSession
) -> tuple[Group, User, GroupMembership | None]:
    group = await get_or_404(session, Group, request.path_params["group_id"], "group")
    user = await get_or_404(session, User, request.path_params["user_id"], "user")
    return group, user, await session.get(GroupMembership, (user.id, group.id))


@routes.put("/v3/groups/{group_id}/users/{user_id}")
async def add_member(request: Request) -> Response:
    enforce(request, "add_user_to_group")
    identity = service(request)
    async with identity.db.session() as session:
        group, user, membership = await _membership(request, session)
        if membership is None:
            session.add(GroupMembership(user_id=user.id, group_id=group.id))
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.get("/v3/groups/{group_id}/users/{user_id}")
async def check_member(request: Request) -> Response:
    enforce(request, "check_user_in_group")
    async with service(request).db.session() as session:
        group, user, membership = await _membership(request, session)
        if membership is None:
            raise NotFound(f"User {user.id} is not a member of group {group.id}.")
    return no_content()


@routes.delete("/v3/groups/{group_id}/users/{user_id}")
async def remove_member(request: Request) -> Response:
    enforce(request, "remove_user_from_group")
    identity = service(request)
    async with identity.db.session() as session:
        group, user, membership = await _membership(request, session)
        if membership is None:
            raise NotFound(f"User {user.id} is not a member of group {group.id}.")
        await session.delete(membership)
        await identity.tokens.revoke(session, user_id=user.id)
    await committed(request)
    return no_content()
