"""``POST /v3/ec2tokens`` and ``POST /v3/s3tokens``: tokens for EC2-signed requests.

As in Keystone: the caller (a service) sends the access key and what the
client signed; identity looks up the EC2 credential, checks the signature with
its secret, and answers with a token for the credential's user and project.
s3tokens takes the string to sign already built (base64) and its signature
(v4, or v1 HMAC-SHA1); ec2tokens takes the request parts (verb, host, path,
params, headers, body hash) and checks a v4 signature over them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json as jsonlib
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core import sigv4
from onestack.core.asgi.errors import BadRequest, NotFound, Unauthorized
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import enforce, json, service
from onestack.identity.api.credentials import access_key_hash
from onestack.identity.catalog import substitute
from onestack.identity.models import Credential

routes = RouteTable()


async def _credentials(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("request must include a request body")
    found = body.get("credentials") or body.get("credential") or body.get("ec2Credentials")
    if not isinstance(found, dict) or "access" not in found:
        raise Unauthorized("EC2 Signature not supplied")
    return found


async def _ec2_credential(request: Request, access: str) -> dict[str, Any]:
    identity = service(request)
    async with identity.db.session() as session:
        row = await session.scalar(
            select(Credential).where(
                Credential.key_hash == access_key_hash(access), Credential.type == "ec2"
            )
        )
        if row is None:
            raise NotFound("EC2 access key not found.")
        blob = jsonlib.loads(identity.secrets.open(row.blob))
        return {"user_id": row.user_id, "project_id": row.project_id, "secret": blob["secret"]}


async def _token_response(request: Request, credential: dict[str, Any], status: int) -> Response:
    identity = service(request)
    token, data = await identity.tokens.issue_for_user(
        credential["user_id"], credential["project_id"], "ec2credential"
    )
    catalog = substitute(await identity.tokens.catalog(), data.project_id)
    return json(views.token(data, catalog), status, {"X-Subject-Token": token})


@routes.post("/v3/s3tokens")
async def s3tokens(request: Request) -> Response:
    enforce(request, "s3tokens_validate")
    credentials = await _credentials(request)
    credential = await _ec2_credential(request, str(credentials["access"]))
    try:
        text = base64.urlsafe_b64decode(str(credentials.get("token", ""))).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("Credential signature mismatch") from None
    secret = credential["secret"]
    if text.startswith("AWS4"):
        try:
            expected = sigv4.signature_from_string(secret, text)
        except ValueError:
            raise Unauthorized("Invalid EC2 signature.") from None
    else:
        digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
        expected = base64.b64encode(digest).decode()
    if not sigv4.same(str(credentials.get("signature", "")), expected):
        raise Unauthorized("Credential signature mismatch")
    return await _token_response(request, credential, 200)


@routes.post("/v3/ec2tokens")
async def ec2tokens(request: Request) -> Response:
    enforce(request, "ec2tokens_validate")
    credentials = await _credentials(request)
    credential = await _ec2_credential(request, str(credentials["access"]))
    headers = {str(k).lower(): str(v) for k, v in (credentials.get("headers") or {}).items()}
    params = {str(k): str(v) for k, v in (credentials.get("params") or {}).items()}
    authorization = headers.get("authorization", "")
    if authorization.startswith(sigv4.ALGORITHM):
        fields = dict(
            part.strip().split("=", 1) for part in authorization[len(sigv4.ALGORITHM) :].split(",")
        )
        scope = fields.get("Credential", "").split("/", 1)[-1]
        signed = fields.get("SignedHeaders", "").split(";")
        amz_date = headers.get("x-amz-date", "")
        skip = None
    elif params.get("X-Amz-Algorithm") == sigv4.ALGORITHM:
        scope = params.get("X-Amz-Credential", "").split("/", 1)[-1]
        signed = params.get("X-Amz-SignedHeaders", "").split(";")
        amz_date = params.get("X-Amz-Date", "")
        skip = "X-Amz-Signature"
    else:
        raise Unauthorized("Only AWS Signature Version 4 is supported.")
    if "host" in signed and "host" not in headers and credentials.get("host"):
        headers["host"] = str(credentials["host"])
    canonical = sigv4.canonical_request(
        str(credentials.get("verb", "GET")),
        str(credentials.get("path", "/")),
        params.items(),
        headers,
        signed,
        str(credentials.get("body_hash") or sigv4.EMPTY_SHA256),
        skip_query=skip,
    )
    text = sigv4.string_to_sign(amz_date, scope, canonical)
    try:
        expected = sigv4.signature_from_string(credential["secret"], text)
    except ValueError:
        raise Unauthorized("Invalid EC2 signature.") from None
    if not sigv4.same(str(credentials.get("signature", "")), expected):
        raise Unauthorized("Credential signature mismatch")
    return await _token_response(request, credential, 200)
