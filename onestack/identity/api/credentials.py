"""``/v3/credentials`` and the OS-EC2 credentials of a user."""

from __future__ import annotations

import hashlib
import json as jsonlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import enforce, get_or_404, json, no_content, service
from onestack.identity.models import Credential, Project, User
from onestack.identity.schemas import CredentialRequest, Ec2CreateRequest

routes = RouteTable()


def access_key_hash(access: str) -> str:
    """The index under which an ec2 credential is found by its access key."""
    return hashlib.sha256(access.encode()).hexdigest()


def _view(request: Request, row: Credential) -> dict[str, Any]:
    body = views.credential(request, row)
    body["blob"] = service(request).secrets.open(row.blob)
    return body


def _ec2_blob(blob: str) -> dict[str, Any]:
    try:
        parsed = jsonlib.loads(blob)
    except ValueError:
        raise BadRequest("An ec2 credential's blob must be JSON with access and secret.") from None
    if not isinstance(parsed, dict) or not parsed.get("access"):
        raise BadRequest("An ec2 credential's blob must be JSON with access and secret.")
    return parsed


@routes.post("/v3/credentials")
async def create_credential(request: Request) -> Response:
    body = (await body_as(request, CredentialRequest)).credential
    if not body.user_id or not body.type or body.blob is None:
        raise BadRequest("A credential needs user_id, type and blob.")
    enforce(request, "create_credential", {"target.credential.user_id": body.user_id})
    identity = service(request)
    key_hash = None
    if body.type == "ec2":
        if not body.project_id:
            raise BadRequest("An ec2 credential needs a project_id.")
        key_hash = access_key_hash(_ec2_blob(body.blob)["access"])
    async with identity.db.session() as session:
        await get_or_404(session, User, body.user_id, "user")
        row = Credential(
            user_id=body.user_id,
            project_id=body.project_id,
            type=body.type,
            blob=identity.secrets.seal(body.blob),
            key_hash=key_hash,
        )
        session.add(row)
        await session.flush()
        result = _view(request, row)
    return json({"credential": result}, 201)


@routes.get("/v3/credentials")
async def list_credentials(request: Request) -> Response:
    context = enforce(request, "list_credentials")
    query = select(Credential)
    for name in ("user_id", "type"):
        if name in request.query_params:
            query = query.where(getattr(Credential, name) == request.query_params[name])
    identity = service(request)
    if not identity.policy.check("admin_required", context):
        query = query.where(Credential.user_id == context.user_id)
    async with identity.db.session() as session:
        rows = (await session.execute(query.order_by(Credential.id))).scalars()
        items = [_view(request, c) for c in rows]
    return json(views.collection(request, "credentials", items))


async def _credential(request: Request, session: AsyncSession, rule: str) -> Credential:
    row = await get_or_404(session, Credential, request.path_params["credential_id"], "credential")
    enforce(request, rule, {"target.credential.user_id": row.user_id})
    return row


@routes.get("/v3/credentials/{credential_id}")
async def get_credential(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _credential(request, session, "get_credential")
        return json({"credential": _view(request, row)})


@routes.patch("/v3/credentials/{credential_id}")
async def update_credential(request: Request) -> Response:
    body = (await body_as(request, CredentialRequest)).credential
    identity = service(request)
    async with identity.db.session() as session:
        row = await _credential(request, session, "update_credential")
        if body.type:
            row.type = body.type
        if body.project_id:
            row.project_id = body.project_id
        if body.blob is not None:
            if row.type == "ec2":
                row.key_hash = access_key_hash(_ec2_blob(body.blob)["access"])
            row.blob = identity.secrets.seal(body.blob)
        result = _view(request, row)
    return json({"credential": result})


@routes.delete("/v3/credentials/{credential_id}")
async def delete_credential(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _credential(request, session, "delete_credential")
        await session.delete(row)
    return no_content()


# -- OS-EC2 ---------------------------------------------------------------------


def _ec2_view(request: Request, row: Credential) -> dict[str, Any]:
    blob = jsonlib.loads(service(request).secrets.open(row.blob))
    return {
        "user_id": row.user_id,
        "tenant_id": row.project_id,
        "access": blob["access"],
        "secret": blob["secret"],
        "trust_id": blob.get("trust_id"),
        "links": views.links(request, f"users/{row.user_id}/credentials/OS-EC2/{blob['access']}"),
    }


def _ec2_owner(request: Request, rule: str) -> str:
    user_id: str = request.path_params["user_id"]
    enforce(request, rule, {"target.user.id": user_id})
    return user_id


@routes.post("/v3/users/{user_id}/credentials/OS-EC2")
async def create_ec2(request: Request) -> Response:
    user_id = _ec2_owner(request, "ec2_create_credential")
    body = await body_as(request, Ec2CreateRequest)
    identity = service(request)
    access, secret = secrets.token_hex(16), secrets.token_hex(16)
    blob = jsonlib.dumps({"access": access, "secret": secret, "trust_id": None})
    async with identity.db.session() as session:
        await get_or_404(session, User, user_id, "user")
        await get_or_404(session, Project, body.tenant_id, "project")
        row = Credential(
            user_id=user_id,
            project_id=body.tenant_id,
            type="ec2",
            blob=identity.secrets.seal(blob),
            key_hash=access_key_hash(access),
        )
        session.add(row)
        await session.flush()
        result = _ec2_view(request, row)
    return json({"credential": result}, 201)


@routes.get("/v3/users/{user_id}/credentials/OS-EC2")
async def list_ec2(request: Request) -> Response:
    user_id = _ec2_owner(request, "ec2_list_credentials")
    async with service(request).db.session() as session:
        rows = await session.execute(
            select(Credential).where(Credential.user_id == user_id, Credential.type == "ec2")
        )
        items = [_ec2_view(request, c) for c in rows.scalars()]
    return json(views.collection(request, "credentials", items))


async def _ec2_row(request: Request, session: AsyncSession, user_id: str) -> Credential:
    access = request.path_params["access"]
    row: Credential | None = await session.scalar(
        select(Credential).where(
            Credential.key_hash == access_key_hash(access),
            Credential.user_id == user_id,
            Credential.type == "ec2",
        )
    )
    if row is None:
        raise NotFound(f"Could not find credential: {access}.")
    return row


@routes.get("/v3/users/{user_id}/credentials/OS-EC2/{access}")
async def get_ec2(request: Request) -> Response:
    user_id = _ec2_owner(request, "ec2_get_credential")
    async with service(request).db.session() as session:
        row = await _ec2_row(request, session, user_id)
        return json({"credential": _ec2_view(request, row)})


@routes.delete("/v3/users/{user_id}/credentials/OS-EC2/{access}")
async def delete_ec2(request: Request) -> Response:
    user_id = _ec2_owner(request, "ec2_delete_credential")
    async with service(request).db.session() as session:
        row = await _ec2_row(request, session, user_id)
        await session.delete(row)
    return no_content()
