"""Role grants on projects, domains and the system, and ``/v3/role_assignments``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.request import query_bool
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import committed, enforce, get_or_404, json, no_content, service
from onestack.identity.models import (
    Assignment,
    Domain,
    Group,
    GroupMembership,
    ImpliedRole,
    Project,
    Role,
    User,
)
from onestack.identity.roles import SYSTEM_TARGET

routes = RouteTable()

# path segment -> (assignment type suffix, model of the target)
TARGETS: dict[str, tuple[str, Any]] = {
    "projects": ("Project", Project),
    "domains": ("Domain", Domain),
}
ACTORS: dict[str, tuple[str, Any]] = {"users": ("User", User), "groups": ("Group", Group)}


def _check_kinds(params: dict[str, str]) -> None:
    if params["actors"] not in ACTORS or params.get("targets", "projects") not in TARGETS:
        raise NotFound("The resource could not be found.")


async def _grant(request: Request, session: AsyncSession, inherited: bool) -> Assignment:
    """The assignment a grant URL names, after checking every part of it exists."""
    params = request.path_params
    _check_kinds(params)
    actor_kind, actor_model = ACTORS[params["actors"]]
    actor = await get_or_404(session, actor_model, params["actor_id"], actor_kind.lower())
    role = await get_or_404(session, Role, params["role_id"], "role")
    if "targets" in params:
        target_kind, target_model = TARGETS[params["targets"]]
        target = await get_or_404(session, target_model, params["target_id"], target_kind.lower())
        target_id = target.id
    else:
        target_kind, target_id = "System", SYSTEM_TARGET
    return Assignment(
        type=f"{actor_kind}{target_kind}",
        actor_id=actor.id,
        target_id=target_id,
        role_id=role.id,
        inherited=inherited,
    )


async def _existing(session: AsyncSession, wanted: Assignment) -> Assignment | None:
    return await session.get(
        Assignment,
        (wanted.type, wanted.actor_id, wanted.target_id, wanted.role_id, wanted.inherited),
    )


async def _revoke_for_actor(request: Request, session: AsyncSession, grant: Assignment) -> None:
    """Tokens that carried the removed role stop working."""
    tokens = service(request).tokens
    project_id = grant.target_id if grant.type.endswith("Project") else None
    users = [grant.actor_id]
    if grant.type.startswith("Group"):
        rows = await session.execute(
            select(GroupMembership.user_id).where(GroupMembership.group_id == grant.actor_id)
        )
        users = list(rows.scalars())
    for user_id in users:
        await tokens.revoke(session, user_id=user_id, project_id=project_id)


def _grant_handlers(inherited: bool) -> tuple[Any, Any, Any]:
    async def put_grant(request: Request) -> Response:
        enforce(request, "create_grant")
        identity = service(request)
        async with identity.db.session() as session:
            grant = await _grant(request, session, inherited)
            if await _existing(session, grant) is None:
                session.add(grant)
            await identity.tokens.changed(session)
        await committed(request)
        return no_content()

    async def check_grant(request: Request) -> Response:
        enforce(request, "check_grant")
        async with service(request).db.session() as session:
            grant = await _grant(request, session, inherited)
            if await _existing(session, grant) is None:
                raise NotFound("Could not find role assignment.")
        return no_content()

    async def delete_grant(request: Request) -> Response:
        enforce(request, "revoke_grant")
        identity = service(request)
        async with identity.db.session() as session:
            grant = await _grant(request, session, inherited)
            existing = await _existing(session, grant)
            if existing is None:
                raise NotFound("Could not find role assignment.")
            await session.delete(existing)
            await _revoke_for_actor(request, session, grant)
        await committed(request)
        return no_content()

    return put_grant, check_grant, delete_grant


async def _list_grants(request: Request) -> Response:
    enforce(request, "list_grants")
    params = request.path_params
    _check_kinds(params)
    async with service(request).db.session() as session:
        actor_kind, actor_model = ACTORS[params["actors"]]
        await get_or_404(session, actor_model, params["actor_id"], actor_kind.lower())
        target_id = params.get("target_id", SYSTEM_TARGET)
        inherited = "inherited_to_projects" in request.url.path
        rows = await session.execute(
            select(Role)
            .join(Assignment, Assignment.role_id == Role.id)
            .where(
                Assignment.actor_id == params["actor_id"],
                Assignment.target_id == target_id,
                Assignment.inherited.is_(inherited),
            )
            .order_by(Role.name)
        )
        items = [views.role(request, r) for r in rows.scalars()]
    return json(views.collection(request, "roles", items))


for _prefix, _inherited in (("/v3", False), ("/v3/OS-INHERIT", True)):
    _suffix = "/inherited_to_projects" if _inherited else ""
    _put, _check, _delete = _grant_handlers(_inherited)
    for _base in (
        f"{_prefix}/{{targets:str}}/{{target_id}}/{{actors:str}}/{{actor_id}}/roles",
        f"{_prefix}/system/{{actors:str}}/{{actor_id}}/roles",
    ):
        if _inherited and "/system/" in _base:
            continue
        routes.get(f"{_base}{_suffix}")(_list_grants)
        routes.put(f"{_base}/{{role_id}}{_suffix}")(_put)
        routes.get(f"{_base}/{{role_id}}{_suffix}")(_check)
        routes.delete(f"{_base}/{{role_id}}{_suffix}")(_delete)


# -- /v3/role_assignments ---------------------------------------------------------


def _scope_of(kind: str, target_id: str, inherited: bool) -> dict[str, Any]:
    if kind.endswith("System"):
        return {"system": {"all": True}}
    scope: dict[str, Any] = {"project" if kind.endswith("Project") else "domain": {"id": target_id}}
    if inherited:
        scope["OS-INHERIT:inherited_to"] = "projects"
    return scope


async def _expand_effective(
    session: AsyncSession, rows: list[Assignment]
) -> list[tuple[Assignment, str | None]]:
    """Group grants become their members' grants; inherited grants land on the projects below.

    Each result carries the group it came through (for the membership link), or None.
    """
    result: list[tuple[Assignment, str | None]] = []
    for row in rows:
        actors: list[tuple[str, str | None]] = [(row.actor_id, None)]
        if row.type.startswith("Group"):
            members = await session.execute(
                select(GroupMembership.user_id).where(GroupMembership.group_id == row.actor_id)
            )
            actors = [(user_id, row.actor_id) for user_id in members.scalars()]
        targets = [(row.type.removeprefix("User").removeprefix("Group"), row.target_id)]
        if row.inherited:
            if row.type.endswith("Domain"):
                found = await session.execute(
                    select(Project.id).where(Project.domain_id == row.target_id)
                )
            else:
                found = await session.execute(
                    select(Project.id).where(Project.parent_id == row.target_id)
                )
            targets = [("Project", pid) for pid in found.scalars()]
        for user_id, via in actors:
            for kind, target_id in targets:
                result.append(
                    (
                        Assignment(
                            type=f"User{kind}",
                            actor_id=user_id,
                            target_id=target_id,
                            role_id=row.role_id,
                            inherited=False,
                        ),
                        via,
                    )
                )
    # Implied roles count as assignments of their own in the effective view.
    implied_rows = (await session.execute(select(ImpliedRole))).scalars().all()
    implies: dict[str, list[str]] = {}
    for rule in implied_rows:
        implies.setdefault(rule.prior_role_id, []).append(rule.implied_role_id)
    expanded = list(result)
    seen = {(a.type, a.actor_id, a.target_id, a.role_id) for a, _ in result}
    queue = list(result)
    while queue:
        grant, via = queue.pop()
        for implied_id in implies.get(grant.role_id, []):
            key = (grant.type, grant.actor_id, grant.target_id, implied_id)
            if key in seen:
                continue
            seen.add(key)
            extra = Assignment(
                type=grant.type,
                actor_id=grant.actor_id,
                target_id=grant.target_id,
                role_id=implied_id,
                inherited=False,
            )
            expanded.append((extra, via))
            queue.append((extra, via))
    # As in Keystone, domain-specific roles only stand for the roles they imply.
    role_ids = {grant.role_id for grant, _ in expanded}
    domain_roles = set(
        (
            await session.execute(
                select(Role.id).where(Role.id.in_(role_ids), Role.domain_id != "")
            )
        ).scalars()
    )
    return [(grant, via) for grant, via in expanded if grant.role_id not in domain_roles]


async def _names(session: AsyncSession, model: Any, ids: set[str]) -> dict[str, Any]:
    if not ids:
        return {}
    rows = await session.execute(select(model).where(model.id.in_(ids)))
    return {row.id: row for row in rows.scalars()}


@routes.get("/v3/role_assignments")
async def list_role_assignments(request: Request) -> Response:
    enforce(request, "list_role_assignments")
    q = request.query_params
    effective = bool(query_bool(request, "effective"))
    include_names = bool(query_bool(request, "include_names"))
    if effective and "group.id" in q:
        raise BadRequest("The effective view cannot be filtered by group.")
    query = select(Assignment)
    if "role.id" in q:
        query = query.where(Assignment.role_id == q["role.id"])
    if "group.id" in q:
        query = query.where(Assignment.actor_id == q["group.id"])
    if not effective and "user.id" in q:
        query = query.where(Assignment.actor_id == q["user.id"])
    if "scope.system" in q:
        query = query.where(Assignment.target_id == SYSTEM_TARGET)
    if q.get("scope.OS-INHERIT:inherited_to") == "projects":
        query = query.where(Assignment.inherited.is_(True))
    async with service(request).db.session() as session:
        rows = list((await session.execute(query)).scalars())
        pairs: list[tuple[Assignment, str | None]] = (
            await _expand_effective(session, rows) if effective else [(r, None) for r in rows]
        )
        if "user.id" in q:
            pairs = [(a, v) for a, v in pairs if a.actor_id == q["user.id"]]
        if "scope.project.id" in q:
            pairs = [
                (a, v)
                for a, v in pairs
                if a.type.endswith("Project") and a.target_id == q["scope.project.id"]
            ]
        if "scope.domain.id" in q:
            pairs = [
                (a, v)
                for a, v in pairs
                if a.type.endswith("Domain") and a.target_id == q["scope.domain.id"]
            ]
        names: dict[str, dict[str, Any]] = {}
        if include_names:
            names["role"] = await _names(session, Role, {a.role_id for a, _ in pairs})
            names["user"] = await _names(
                session, User, {a.actor_id for a, _ in pairs if a.type.startswith("User")}
            )
            names["group"] = await _names(
                session, Group, {a.actor_id for a, _ in pairs if a.type.startswith("Group")}
            )
            names["project"] = await _names(
                session, Project, {a.target_id for a, _ in pairs if a.type.endswith("Project")}
            )
            domain_ids = {a.target_id for a, _ in pairs if a.type.endswith("Domain")}
            for entity in (
                *names["user"].values(),
                *names["group"].values(),
                *names["project"].values(),
            ):
                domain_ids.add(entity.domain_id)
            names["domain"] = await _names(session, Domain, domain_ids)
    items = [_render(request, a, via, names) for a, via in pairs]
    return json(
        {
            "role_assignments": items,
            "links": {"self": str(request.url), "previous": None, "next": None},
        }
    )


def _render(
    request: Request, a: Assignment, via: str | None, names: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    actor_key = "user" if a.type.startswith("User") else "group"
    scope = _scope_of(a.type, a.target_id, a.inherited)
    body: dict[str, Any] = {
        "role": {"id": a.role_id},
        actor_key: {"id": a.actor_id},
        "scope": scope,
    }
    if names:
        domains = names["domain"]

        def domain_ref(domain_id: str) -> dict[str, Any]:
            d = domains.get(domain_id)
            return {"id": domain_id, "name": d.name if d else None}

        role = names["role"].get(a.role_id)
        if role is not None:
            body["role"]["name"] = role.name
            if role.domain_id:
                body["role"]["domain"] = domain_ref(role.domain_id)
        actor = names[actor_key].get(a.actor_id)
        if actor is not None:
            body[actor_key].update(name=actor.name, domain=domain_ref(actor.domain_id))
        if "project" in scope:
            project = names["project"].get(a.target_id)
            if project is not None:
                scope["project"].update(name=project.name, domain=domain_ref(project.domain_id))
        elif "domain" in scope:
            domain = domains.get(a.target_id)
            scope["domain"]["name"] = domain.name if domain else None
    target_path = (
        "system"
        if "system" in scope
        else f"{'projects' if 'project' in scope else 'domains'}/{a.target_id}"
    )
    link = views.v3_url(request, f"{target_path}/{actor_key}s/{a.actor_id}/roles/{a.role_id}")
    body["links"] = {"assignment": link}
    if via:
        body["links"]["membership"] = views.v3_url(request, f"groups/{via}/users/{a.actor_id}")
    return body
