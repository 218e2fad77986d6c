"""``/v3/domains``."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Forbidden
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import committed, enforce, get_or_404, json, no_content, service
from onestack.identity.api.crud import apply_changes, filtered, flush_unique
from onestack.identity.models import Assignment, Domain, Group, Project, User
from onestack.identity.schemas import DomainCreate

routes = RouteTable()
FIELDS = ("name", "description", "enabled")


@routes.post("/v3/domains")
async def create_domain(request: Request) -> Response:
    enforce(request, "create_domain")
    body = (await body_as(request, DomainCreate)).domain
    if not body.name:
        raise BadRequest("Invalid input for field 'name': a domain needs a name.")
    identity = service(request)
    async with identity.db.session() as session:
        domain = Domain(name=body.name, description=body.description or "", enabled=True)
        domain.extra = apply_changes(domain, body, FIELDS)
        session.add(domain)
        await flush_unique(session, "domain", body.name)
        await identity.tokens.changed(session)
        result = views.domain(request, domain)
    await committed(request)
    return json({"domain": result}, 201)


@routes.get("/v3/domains")
async def list_domains(request: Request) -> Response:
    enforce(request, "list_domains")
    query = filtered(select(Domain), Domain, request, ("name", "enabled"))
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(Domain.name))).scalars()
        items = [views.domain(request, d) for d in rows]
    return json(views.collection(request, "domains", items))


@routes.get("/v3/domains/{domain_id}")
async def get_domain(request: Request) -> Response:
    domain_id = request.path_params["domain_id"]
    enforce(request, "get_domain", {"target.domain_id": domain_id})
    async with service(request).db.session() as session:
        domain = await get_or_404(session, Domain, domain_id, "domain")
        return json({"domain": views.domain(request, domain)})


@routes.patch("/v3/domains/{domain_id}")
async def update_domain(request: Request) -> Response:
    enforce(request, "update_domain")
    body = (await body_as(request, DomainCreate)).domain
    identity = service(request)
    async with identity.db.session() as session:
        domain = await get_or_404(session, Domain, request.path_params["domain_id"], "domain")
        was_enabled = domain.enabled
        domain.extra = {**(domain.extra or {}), **apply_changes(domain, body, FIELDS)}
        await flush_unique(session, "domain", body.name)
        if was_enabled and not domain.enabled:
            await identity.tokens.revoke(session, domain_id=domain.id)
        await identity.tokens.changed(session)
        result = views.domain(request, domain)
    await committed(request)
    return json({"domain": result})


@routes.delete("/v3/domains/{domain_id}")
async def delete_domain(request: Request) -> Response:
    enforce(request, "delete_domain")
    identity = service(request)
    async with identity.db.session() as session:
        domain = await get_or_404(session, Domain, request.path_params["domain_id"], "domain")
        if domain.enabled:
            raise Forbidden("Cannot delete a domain that is enabled, please disable it first.")
        projects = list(
            (
                await session.execute(select(Project.id).where(Project.domain_id == domain.id))
            ).scalars()
        )
        owned = [domain.id, *projects]
        await session.execute(delete(Assignment).where(Assignment.target_id.in_(owned)))
        # Detach the hierarchy first: projects reference their parents.
        await session.execute(
            update(Project).where(Project.domain_id == domain.id).values(parent_id=None)
        )
        await session.execute(delete(Project).where(Project.domain_id == domain.id))
        await session.execute(delete(User).where(User.domain_id == domain.id))
        await session.execute(delete(Group).where(Group.domain_id == domain.id))
        await session.delete(domain)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()
