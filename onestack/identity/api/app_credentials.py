"""``/v3/users/{user_id}/application_credentials``: delegated, restricted secrets."""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Forbidden, NotFound
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import committed, enforce, json, no_content, service
from onestack.identity.api.crud import flush_unique
from onestack.identity.models import ApplicationCredential, Role
from onestack.identity.schemas import AppCredRequest

routes = RouteTable()


async def _roles(session: AsyncSession, ids: list[str]) -> list[Role]:
    if not ids:
        return []
    rows = await session.execute(select(Role).where(Role.id.in_(ids)).order_by(Role.name))
    return list(rows.scalars())


def _owner(request: Request, rule: str) -> str:
    user_id: str = request.path_params["user_id"]
    enforce(request, rule, {"target.user.id": user_id})
    return user_id


@routes.post("/v3/users/{user_id}/application_credentials")
async def create_app_cred(request: Request) -> Response:
    user_id: str = request.path_params["user_id"]
    context = enforce(request, "create_application_credential", {"target.user.id": user_id})
    token = context.token
    assert token is not None
    if token.user_id != user_id:
        raise Forbidden("Application credentials can only be created by their own user.")
    if not token.project_id:
        raise Forbidden("Creating an application credential needs a project-scoped token.")
    if token.app_cred_id:
        raise Forbidden("An application credential cannot create another one.")
    body = (await body_as(request, AppCredRequest)).application_credential
    if body.expires_at is not None:
        expires = (
            body.expires_at if body.expires_at.tzinfo else body.expires_at.replace(tzinfo=dt.UTC)
        )
        if expires <= dt.datetime.now(dt.UTC):
            raise BadRequest("expires_at must be in the future.")
    held = {r["id"]: r["name"] for r in token.roles}
    by_name = {name: role_id for role_id, name in held.items()}
    wanted: list[str] = []
    for ref in body.roles or []:
        role_id = ref.id if ref.id else by_name.get(ref.name or "")
        if role_id not in held:
            raise Forbidden(f"The caller does not hold role {ref.id or ref.name} to delegate.")
        wanted.append(role_id)
    role_ids = list(dict.fromkeys(wanted)) or list(held)
    identity = service(request)
    secret = body.secret or secrets.token_urlsafe(64)
    secret_hash = await identity.passwords.hash(secret)
    async with identity.db.session() as session:
        row = ApplicationCredential(
            name=body.name,
            user_id=user_id,
            project_id=token.project_id,
            secret_hash=secret_hash,
            description=body.description or "",
            expires_at=body.expires_at,
            unrestricted=body.unrestricted,
            role_ids=role_ids,
        )
        session.add(row)
        await flush_unique(session, "application_credential", body.name)
        result = views.application_credential(request, row, await _roles(session, role_ids))
    result["secret"] = secret
    return json({"application_credential": result}, 201)


@routes.get("/v3/users/{user_id}/application_credentials")
async def list_app_creds(request: Request) -> Response:
    user_id = _owner(request, "list_application_credentials")
    query = select(ApplicationCredential).where(ApplicationCredential.user_id == user_id)
    if "name" in request.query_params:
        query = query.where(ApplicationCredential.name == request.query_params["name"])
    async with service(request).db.session() as session:
        rows = list((await session.execute(query.order_by(ApplicationCredential.name))).scalars())
        items = [
            views.application_credential(request, a, await _roles(session, a.role_ids))
            for a in rows
        ]
    return json(views.collection(request, "application_credentials", items))


async def _app_cred(request: Request, session: AsyncSession, user_id: str) -> ApplicationCredential:
    row = await session.get(ApplicationCredential, request.path_params["app_cred_id"])
    if row is None or row.user_id != user_id:
        raise NotFound(
            f"Could not find application credential: {request.path_params['app_cred_id']}."
        )
    return row


@routes.get("/v3/users/{user_id}/application_credentials/{app_cred_id}")
async def get_app_cred(request: Request) -> Response:
    user_id = _owner(request, "get_application_credential")
    async with service(request).db.session() as session:
        row = await _app_cred(request, session, user_id)
        result = views.application_credential(request, row, await _roles(session, row.role_ids))
    return json({"application_credential": result})


@routes.delete("/v3/users/{user_id}/application_credentials/{app_cred_id}")
async def delete_app_cred(request: Request) -> Response:
    user_id = _owner(request, "delete_application_credential")
    identity = service(request)
    async with identity.db.session() as session:
        row = await _app_cred(request, session, user_id)
        await identity.tokens.revoke(session, app_cred_id=row.id)
        await session.delete(row)
    await committed(request)
    return no_content()
