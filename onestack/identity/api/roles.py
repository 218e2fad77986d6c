"""``/v3/roles``, implied roles and role inference rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Forbidden, NotFound
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import committed, enforce, get_or_404, json, no_content, service
from onestack.identity.api.crud import apply_changes, filtered, flush_unique
from onestack.identity.models import Assignment, ImpliedRole, Role
from onestack.identity.schemas import RoleRequest

routes = RouteTable()


@routes.post("/v3/roles")
async def create_role(request: Request) -> Response:
    enforce(request, "create_role")
    body = (await body_as(request, RoleRequest)).role
    if not body.name:
        raise BadRequest("Invalid input for field 'name': a role needs a name.")
    identity = service(request)
    async with identity.db.session() as session:
        role = Role(
            name=body.name,
            domain_id=body.domain_id or "",
            description=body.description or "",
            options=body.options or {},
        )
        session.add(role)
        await flush_unique(session, "role", body.name)
        result = views.role(request, role)
    return json({"role": result}, 201)


@routes.get("/v3/roles")
async def list_roles(request: Request) -> Response:
    enforce(request, "list_roles")
    query = filtered(select(Role), Role, request, ("name",))
    query = query.where(Role.domain_id == request.query_params.get("domain_id", ""))
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(Role.name))).scalars()
        items = [views.role(request, r) for r in rows]
    return json(views.collection(request, "roles", items))


@routes.get("/v3/roles/{role_id}")
async def get_role(request: Request) -> Response:
    enforce(request, "get_role")
    async with service(request).db.session() as session:
        role = await get_or_404(session, Role, request.path_params["role_id"], "role")
        return json({"role": views.role(request, role)})


@routes.patch("/v3/roles/{role_id}")
async def update_role(request: Request) -> Response:
    enforce(request, "update_role")
    body = (await body_as(request, RoleRequest)).role
    identity = service(request)
    async with identity.db.session() as session:
        role = await get_or_404(session, Role, request.path_params["role_id"], "role")
        if (role.options or {}).get("immutable"):
            raise Forbidden(f"Role {role.id} is immutable.")
        apply_changes(role, body, ("name", "description", "options"))
        await flush_unique(session, "role", body.name)
        await identity.tokens.changed(session)
        result = views.role(request, role)
    await committed(request)
    return json({"role": result})


@routes.delete("/v3/roles/{role_id}")
async def delete_role(request: Request) -> Response:
    enforce(request, "delete_role")
    identity = service(request)
    async with identity.db.session() as session:
        role = await get_or_404(session, Role, request.path_params["role_id"], "role")
        if (role.options or {}).get("immutable"):
            raise Forbidden(f"Role {role.id} is immutable.")
        holders = await session.execute(
            select(Assignment.actor_id).where(Assignment.role_id == role.id)
        )
        for actor_id in set(holders.scalars()):
            await identity.tokens.revoke(session, user_id=actor_id)
        await session.delete(role)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


def _inference(request: Request, prior: Role, implied: list[Role]) -> dict[str, Any]:
    return {
        "prior_role": views.role_ref(request, prior),
        "implies": [views.role_ref(request, r) for r in implied],
    }


@routes.get("/v3/roles/{prior_id}/implies")
async def list_implied(request: Request) -> Response:
    enforce(request, "list_implied_roles")
    async with service(request).db.session() as session:
        prior = await get_or_404(session, Role, request.path_params["prior_id"], "role")
        rows = await session.execute(
            select(Role)
            .join(ImpliedRole, ImpliedRole.implied_role_id == Role.id)
            .where(ImpliedRole.prior_role_id == prior.id)
        )
        body = _inference(request, prior, list(rows.scalars()))
    return json({"role_inference": body, "links": {"self": str(request.url)}})


async def _pair(request: Request, session: AsyncSession) -> tuple[Role, Role, ImpliedRole | None]:
    prior = await get_or_404(session, Role, request.path_params["prior_id"], "role")
    implied = await get_or_404(session, Role, request.path_params["implied_id"], "role")
    return prior, implied, await session.get(ImpliedRole, (prior.id, implied.id))


@routes.put("/v3/roles/{prior_id}/implies/{implied_id}")
async def create_implied(request: Request) -> Response:
    enforce(request, "create_implied_role")
    identity = service(request)
    async with identity.db.session() as session:
        prior, implied, rule = await _pair(request, session)
        if prior.id == implied.id:
            raise BadRequest("A role cannot imply itself.")
        if not prior.domain_id and implied.domain_id:
            raise Forbidden("A global role cannot imply a domain-specific role.")
        if rule is None:
            session.add(ImpliedRole(prior_role_id=prior.id, implied_role_id=implied.id))
        await identity.tokens.changed(session)
        body = {
            "role_inference": {
                "prior_role": views.role_ref(request, prior),
                "implies": views.role_ref(request, implied),
            }
        }
    await committed(request)
    return json(body, 201)


@routes.get("/v3/roles/{prior_id}/implies/{implied_id}")
async def get_implied(request: Request) -> Response:
    enforce(request, "get_implied_role")
    async with service(request).db.session() as session:
        prior, implied, rule = await _pair(request, session)
        if rule is None:
            raise NotFound(f"{prior.id} does not imply {implied.id}.")
        if request.method == "HEAD":
            return no_content()
        return json(
            {
                "role_inference": {
                    "prior_role": views.role_ref(request, prior),
                    "implies": views.role_ref(request, implied),
                }
            }
        )


@routes.delete("/v3/roles/{prior_id}/implies/{implied_id}")
async def delete_implied(request: Request) -> Response:
    enforce(request, "delete_implied_role")
    identity = service(request)
    async with identity.db.session() as session:
        prior, implied, rule = await _pair(request, session)
        if rule is None:
            raise NotFound(f"{prior.id} does not imply {implied.id}.")
        await session.delete(rule)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.get("/v3/role_inferences")
async def list_inferences(request: Request) -> Response:
    enforce(request, "list_role_inference_rules")
    async with service(request).db.session() as session:
        rules = list((await session.execute(select(ImpliedRole))).scalars())
        roles = {r.id: r for r in (await session.execute(select(Role))).scalars()}
    by_prior: dict[str, list[Role]] = {}
    for rule in rules:
        by_prior.setdefault(rule.prior_role_id, []).append(roles[rule.implied_role_id])
    items = [_inference(request, roles[p], implied) for p, implied in by_prior.items()]
    return json({"role_inferences": items, "links": {"self": str(request.url)}})
