"""``/v3/users``: users, their passwords, projects and groups."""

from __future__ import annotations

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound, Unauthorized
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import utcnow
from onestack.identity import views
from onestack.identity.api.common import (
    committed,
    enforce,
    get_or_404,
    json,
    no_content,
    service,
)
from onestack.identity.api.crud import apply_changes, filtered, flush_unique
from onestack.identity.models import Assignment, Domain, Group, GroupMembership, Project, User
from onestack.identity.roles import granted_target_ids
from onestack.identity.schemas import PasswordChange, UserRequest

routes = RouteTable()
FIELDS = (
    "name",
    "domain_id",
    "enabled",
    "default_project_id",
    "description",
    "email",
    "password",
)


def _user_target(user: User) -> dict[str, str]:
    return {"target.user.id": user.id, "target.domain_id": user.domain_id}


@routes.post("/v3/users")
async def create_user(request: Request) -> Response:
    context = enforce(request, "create_user")
    body = (await body_as(request, UserRequest)).user
    if not body.name:
        raise BadRequest("Invalid input for field 'name': a user needs a name.")
    identity = service(request)
    domain_id = body.domain_id or (context.token.project_domain_id if context.token else None)
    domain_id = domain_id or "default"
    password_hash = await identity.passwords.hash(body.password) if body.password else None
    async with identity.db.session() as session:
        if await session.get(Domain, domain_id) is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
        if body.default_project_id and await session.get(Project, body.default_project_id) is None:
            raise NotFound(f"Could not find project: {body.default_project_id}.")
        user = User(
            name=body.name,
            domain_id=domain_id,
            enabled=True if body.enabled is None else body.enabled,
            password_hash=password_hash,
            password_created_at=utcnow() if password_hash else None,
            default_project_id=body.default_project_id,
            description=body.description or "",
            email=body.email,
        )
        user.extra = apply_changes(user, body, FIELDS)
        user.password_hash = password_hash
        user.domain_id = domain_id
        session.add(user)
        await flush_unique(session, "user", body.name)
        await identity.tokens.changed(session)
        result = views.user(request, user)
    await committed(request)
    return json({"user": result}, 201)


@routes.get("/v3/users")
async def list_users(request: Request) -> Response:
    enforce(request, "list_users", {"target.domain_id": request.query_params.get("domain_id")})
    query = filtered(select(User), User, request, ("name", "domain_id", "enabled"))
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(User.name))).scalars()
        items = [views.user(request, u) for u in rows]
    return json(views.collection(request, "users", items))


@routes.get("/v3/users/{user_id}")
async def get_user(request: Request) -> Response:
    async with service(request).db.session() as session:
        user = await get_or_404(session, User, request.path_params["user_id"], "user")
        enforce(request, "get_user", _user_target(user))
        return json({"user": views.user(request, user)})


@routes.patch("/v3/users/{user_id}")
async def update_user(request: Request) -> Response:
    enforce(request, "update_user")
    body = (await body_as(request, UserRequest)).user
    identity = service(request)
    new_hash = await identity.passwords.hash(body.password) if body.password else None
    async with identity.db.session() as session:
        user = await get_or_404(session, User, request.path_params["user_id"], "user")
        if body.domain_id not in (None, user.domain_id):
            raise BadRequest("A user cannot move to another domain.")
        was_enabled = user.enabled
        extras = apply_changes(
            user, body, ("name", "enabled", "default_project_id", "description", "email")
        )
        user.extra = {**(user.extra or {}), **{k: v for k, v in extras.items() if k != "password"}}
        if new_hash:
            user.password_hash = new_hash
            user.password_created_at = utcnow()
        await flush_unique(session, "user", body.name)
        if new_hash or (was_enabled and not user.enabled):
            await identity.tokens.revoke(session, user_id=user.id)
        await identity.tokens.changed(session)
        result = views.user(request, user)
    await committed(request)
    return json({"user": result})


@routes.delete("/v3/users/{user_id}")
async def delete_user(request: Request) -> Response:
    enforce(request, "delete_user")
    identity = service(request)
    async with identity.db.session() as session:
        user = await get_or_404(session, User, request.path_params["user_id"], "user")
        await session.execute(delete(Assignment).where(Assignment.actor_id == user.id))
        await identity.tokens.revoke(session, user_id=user.id)
        await session.delete(user)
    await committed(request)
    return no_content()


@routes.post("/v3/users/{user_id}/password")
async def change_password(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    enforce(request, "change_password", {"target.user.id": user_id})
    body = (await body_as(request, PasswordChange)).user
    identity = service(request)
    async with identity.db.session() as session:
        user = await get_or_404(session, User, user_id, "user")
        current = user.password_hash
    if not await identity.passwords.verify(current, body.original_password):
        raise Unauthorized("The original password is not correct.")
    new_hash = await identity.passwords.hash(body.password)
    async with identity.db.session() as session:
        user = await get_or_404(session, User, user_id, "user")
        user.password_hash = new_hash
        user.password_created_at = utcnow()
        await identity.tokens.revoke(session, user_id=user.id)
    await committed(request)
    return no_content()


@routes.get("/v3/users/{user_id}/projects")
async def list_user_projects(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    enforce(request, "list_user_projects", {"target.user.id": user_id})
    async with service(request).db.session() as session:
        await get_or_404(session, User, user_id, "user")
        ids = await granted_target_ids(session, user_id, projects=True)
        rows = await session.execute(
            select(Project).where(Project.id.in_(ids)).order_by(Project.name)
        )
        items = [views.project(request, p) for p in rows.scalars()]
    return json(views.collection(request, "projects", items))


@routes.get("/v3/users/{user_id}/groups")
async def list_user_groups(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    enforce(request, "list_groups_for_user", {"target.user.id": user_id})
    async with service(request).db.session() as session:
        await get_or_404(session, User, user_id, "user")
        rows = await session.execute(
            select(Group)
            .join(GroupMembership, GroupMembership.group_id == Group.id)
            .where(GroupMembership.user_id == user_id)
            .order_by(Group.name)
        )
        items = [views.group(request, g) for g in rows.scalars()]
    return json(views.collection(request, "groups", items))
