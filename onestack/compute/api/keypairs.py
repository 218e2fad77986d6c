"""``/os-keypairs``: SSH key pairs per user, generated (the private key is returned once,
before 2.92) or imported (RSA, ECDSA, ed25519), with their MD5 fingerprints."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import (
    at_least,
    body_of,
    caller,
    enforce,
    limit_marker,
    own,
    service,
)
from onestack.compute.models import KeyPair
from onestack.compute.user_quotas import UserQuotas
from onestack.compute.views import iso_micro
from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()

NAME = re.compile(r"^[\w\-. @]{1,255}$")


def fingerprint(public_key: str) -> str:
    """MD5 of the key blob, colon-separated (what ``ssh-keygen -l -E md5`` prints)."""
    blob = base64.b64decode(public_key.split()[1])
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def check_public_key(text: str) -> str:
    """The OpenSSH public key, parsed to be sure; 400 when it is not one."""
    text = text.strip()
    try:
        serialization.load_ssh_public_key(text.encode())
    except (ValueError, TypeError, IndexError):
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from None
    return text


def generate(kind: str) -> tuple[str, str]:
    """A new key pair as (OpenSSH public key, PEM/OpenSSH private key)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " Generated-by-Nova", private.decode()


def view(request: Request, pair: KeyPair, *, full: bool) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": pair.name,
        "public_key": pair.public_key,
        "fingerprint": pair.fingerprint,
    }
    if at_least(request, "2.2"):
        found["type"] = pair.type
    if full:
        found.update(
            {
                "user_id": pair.user_id,
                "created_at": iso_micro(pair.created_at),
                "deleted": False,
                "deleted_at": None,
                "updated_at": None,
                "id": pair.id,
            }
        )
    return found


def _target_user(request: Request, given: Any = None) -> str:
    """The caller's user, or (admin, 2.10+) the one named in the query or body."""
    context = caller(request)
    wanted = given or request.query_params.get("user_id")
    if wanted and wanted != context.user_id:
        if not at_least(request, "2.10"):
            raise BadRequest("user_id is not supported before microversion 2.10")
        enforce(request, "other_users_keypairs")
        return str(wanted)
    return str(context.user_id)


@routes.get("/v2.1/os-keypairs")
async def list_keypairs(request: Request) -> Response:
    enforce(request, "read", own(request))
    user = _target_user(request)
    query = select(KeyPair).where(KeyPair.user_id == user).order_by(KeyPair.name)
    limit, marker = (None, None)
    if at_least(request, "2.35"):
        limit, marker = limit_marker(request)
    async with service(request).db.session() as session:
        pairs = list((await session.execute(query)).scalars())
    if marker is not None:
        names = [p.name for p in pairs]
        if marker not in names:
            raise BadRequest(f"marker [{marker}] not found")
        pairs = pairs[names.index(marker) + 1 :]
    if limit is not None:
        pairs = pairs[:limit]
    return JSONResponse({"keypairs": [{"keypair": view(request, p, full=False)} for p in pairs]})


@routes.post("/v2.1/os-keypairs")
async def create_keypair(request: Request) -> Response:
    context = enforce(request, "write", own(request))
    body = body_of(await json_body(request), "keypair")
    name = body.get("name")
    if not isinstance(name, str) or not NAME.match(name) or name != name.strip():
        raise BadRequest(
            "Keypair data is invalid: Keypair name contains unsafe characters"
            if isinstance(name, str) and name
            else "Invalid input for field/attribute name."
        )
    kind = body.get("type", "ssh")
    if kind not in ("ssh", "x509") or ("type" in body and not at_least(request, "2.2")):
        raise BadRequest("Invalid input for field/attribute type.")
    user = _target_user(request, body.get("user_id"))
    private = None
    if body.get("public_key"):
        public = check_public_key(str(body["public_key"]))
    elif at_least(request, "2.92"):
        raise BadRequest("Invalid input for field/attribute keypair. 'public_key' is required.")
    else:
        public, private = generate("rsa")
    compute = service(request)
    project_limits = await compute.quotas.limits(context.project_id or "")
    own_limits = await UserQuotas(compute.db).limits(context.project_id or "", user, project_limits)
    limit = own_limits["key_pairs"]
    pair = KeyPair(
        user_id=user,
        project_id=context.project_id,
        name=name,
        type=kind,
        public_key=public,
        fingerprint=fingerprint(public),
    )
    try:
        async with compute.db.session() as session:
            count = (
                await session.execute(select(func.count()).where(KeyPair.user_id == user))
            ).scalar_one()
            if limit >= 0 and count >= limit:
                raise Forbidden("Quota exceeded, too many key pairs.")
            exists = await session.execute(
                select(KeyPair.id).where(KeyPair.user_id == user, KeyPair.name == name)
            )
            if exists.first() is not None:
                raise Conflict(f"Key pair '{name}' already exists.")
            session.add(pair)
    except IntegrityError:
        raise Conflict(f"Key pair '{name}' already exists.") from None
    shown = view(request, pair, full=False)
    shown["user_id"] = user
    if private is not None:
        shown["private_key"] = private
    status = 201 if at_least(request, "2.2") else 200
    return JSONResponse({"keypair": shown}, status_code=status)


async def _find(request: Request, name: str) -> KeyPair:
    user = _target_user(request)
    async with service(request).db.session() as session:
        pair = (
            await session.execute(
                select(KeyPair).where(KeyPair.user_id == user, KeyPair.name == name)
            )
        ).scalar_one_or_none()
    if pair is None:
        raise NotFound(f"Keypair {name} not found for user {user}")
    return pair


@routes.get("/v2.1/os-keypairs/{name}")
async def show_keypair(request: Request) -> Response:
    enforce(request, "read", own(request))
    pair = await _find(request, request.path_params["name"])
    return JSONResponse({"keypair": view(request, pair, full=True)})


@routes.delete("/v2.1/os-keypairs/{name}")
async def delete_keypair(request: Request) -> Response:
    enforce(request, "write", own(request))
    pair = await _find(request, request.path_params["name"])
    async with service(request).db.session() as session:
        await session.execute(delete(KeyPair).where(KeyPair.id == pair.id))
    return Response(status_code=204 if at_least(request, "2.2") else 202)
