"""``/v3/auth``: issue, validate, check and revoke tokens; what a token may reach."""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import NotFound, Unauthorized
from onestack.core.asgi.request import body_as, query_bool
from onestack.core.asgi.routing import RouteTable
from onestack.core.auth.context import TokenData
from onestack.identity import roles as role_logic
from onestack.identity import views
from onestack.identity.api.common import caller, committed, enforce, json, no_content, service
from onestack.identity.catalog import substitute
from onestack.identity.models import Domain, Project
from onestack.identity.schemas import AuthRequest

routes = RouteTable()


@routes.post("/v3/auth/tokens")
async def issue_token(request: Request) -> Response:
    body = await body_as(request, AuthRequest)
    identity = service(request)
    token, data = await identity.tokens.issue(body.auth)
    catalog = None
    if not query_bool(request, "nocatalog"):
        catalog = substitute(await identity.tokens.catalog(), data.project_id)
    return json(views.token(data, catalog), 201, {"X-Subject-Token": token})


def _subject(request: Request) -> str:
    subject = request.headers.get("x-subject-token")
    if not subject:
        raise NotFound("Could not find token: the X-Subject-Token header is missing.")
    return subject


async def _validated(request: Request, rule: str) -> tuple[str, TokenData]:
    identity = service(request)
    subject = _subject(request)
    try:
        data = await identity.tokens.validate(
            subject, allow_expired=bool(query_bool(request, "allow_expired"))
        )
    except Unauthorized:
        raise NotFound("Could not find token.") from None
    enforce(request, rule, {"target.user.id": data.user_id})
    return subject, data


@routes.get("/v3/auth/tokens")
async def validate_token(request: Request) -> Response:
    subject, data = await _validated(request, "validate_token")
    if request.method == "HEAD":
        return Response(status_code=200, headers={"X-Subject-Token": subject})
    catalog = None
    if not query_bool(request, "nocatalog"):
        catalog = substitute(await service(request).tokens.catalog(), data.project_id)
    return json(views.token(data, catalog), 200, {"X-Subject-Token": subject})


@routes.delete("/v3/auth/tokens")
async def revoke_token(request: Request) -> Response:
    _, data = await _validated(request, "revoke_token")
    identity = service(request)
    async with identity.db.session() as session:
        await identity.tokens.revoke(session, audit_id=data.audit_ids[0])
    await committed(request)
    return no_content()


def _authenticated(request: Request) -> TokenData:
    context = caller(request)
    if context.token is None:
        raise Unauthorized("The request you have made requires authentication.")
    return context.token


@routes.get("/v3/auth/catalog")
async def auth_catalog(request: Request) -> Response:
    token = _authenticated(request)
    catalog = substitute(await service(request).tokens.catalog(), token.project_id)
    return json({"catalog": catalog, "links": {"self": str(request.url)}})


@routes.get("/v3/auth/projects")
async def auth_projects(request: Request) -> Response:
    token = _authenticated(request)
    async with service(request).db.session() as session:
        ids = await role_logic.granted_target_ids(session, token.user_id, projects=True)
        rows = await session.execute(
            select(Project)
            .where(Project.id.in_(ids), Project.enabled.is_(True))
            .order_by(Project.name)
        )
        items = [views.project(request, p) for p in rows.scalars()]
    return json(views.collection(request, "projects", items))


@routes.get("/v3/auth/domains")
async def auth_domains(request: Request) -> Response:
    token = _authenticated(request)
    async with service(request).db.session() as session:
        ids = await role_logic.granted_target_ids(session, token.user_id, projects=False)
        rows = await session.execute(
            select(Domain).where(Domain.id.in_(ids), Domain.enabled.is_(True)).order_by(Domain.name)
        )
        items = [views.domain(request, d) for d in rows.scalars()]
    return json(views.collection(request, "domains", items))


@routes.get("/v3/auth/system")
async def auth_system(request: Request) -> Response:
    token = _authenticated(request)
    async with service(request).db.session() as session:
        granted = await role_logic.has_system_grant(session, token.user_id)
    return json({"system": [{"all": True}] if granted else [], "links": {"self": str(request.url)}})
