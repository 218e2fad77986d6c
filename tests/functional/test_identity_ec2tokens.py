"""Identity's ``/v3/s3tokens`` and ``/v3/ec2tokens``: tokens for EC2-signed requests."""

from __future__ import annotations

import base64
import hashlib
import hmac

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from onestack.core import sigv4
from tests.conftest import IdentityClient


async def _credential(identity: IdentityClient, token: str) -> tuple[str, str, str]:
    me = await identity.call("GET", "/v3/auth/tokens", token, headers={"X-Subject-Token": token})
    body = me.json()["token"]
    made = await identity.call(
        "POST",
        f"/v3/users/{body['user']['id']}/credentials/OS-EC2",
        token,
        json={"tenant_id": body["project"]["id"]},
    )
    assert made.status_code == 201
    return (
        made.json()["credential"]["access"],
        made.json()["credential"]["secret"],
        body["project"]["id"],
    )


async def test_s3tokens_checks_v4_and_v1_signatures(identity: IdentityClient) -> None:
    admin = await identity.token()
    access, secret, project = await _credential(identity, admin)
    text = "\n".join(
        ["AWS4-HMAC-SHA256", "20240101T000000Z", "20240101/us-east-1/s3/aws4_request", "0" * 64]
    )
    signature = sigv4.signature_from_string(secret, text)
    body = {
        "credentials": {
            "access": access,
            "signature": signature,
            "token": base64.urlsafe_b64encode(text.encode()).decode(),
        }
    }
    granted = await identity.call("POST", "/v3/s3tokens", admin, json=body)
    assert granted.status_code == 200
    token = granted.json()["token"]
    assert token["project"]["id"] == project and "ec2credential" in token["methods"]
    assert {r["name"] for r in token["roles"]} >= {"admin", "member"}
    body["credentials"]["signature"] = "0" * 64
    assert (await identity.call("POST", "/v3/s3tokens", admin, json=body)).status_code == 401
    body["credentials"]["access"] = "unknown"
    assert (await identity.call("POST", "/v3/s3tokens", admin, json=body)).status_code == 404
    v1 = "GET\n\n\n1700000000\n/bucket/key"
    v1_sig = base64.b64encode(
        hmac.new(secret.encode(), v1.encode(), hashlib.sha1).digest()
    ).decode()
    legacy = {
        "credentials": {
            "access": access,
            "signature": v1_sig,
            "token": base64.urlsafe_b64encode(v1.encode()).decode(),
        }
    }
    assert (await identity.call("POST", "/v3/s3tokens", admin, json=legacy)).status_code == 200


async def test_ec2tokens_checks_a_signed_request_and_issues_a_token(
    identity: IdentityClient,
) -> None:
    admin = await identity.token()
    access, secret, project = await _credential(identity, admin)
    request = AWSRequest(
        "GET", "http://ec2.example:8788/?Action=DescribeInstances&Version=2016-11-15"
    )
    SigV4Auth(Credentials(access, secret), "ec2", "RegionOne").add_auth(request)
    headers = dict(request.headers.items())
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    body = {
        "credentials": {
            "access": access,
            "signature": signature,
            "host": "ec2.example:8788",
            "verb": "GET",
            "path": "/",
            "params": {"Action": "DescribeInstances", "Version": "2016-11-15"},
            "headers": {**headers, "Host": "ec2.example:8788"},
            "body_hash": sigv4.EMPTY_SHA256,
        }
    }
    issued = await identity.call("POST", "/v3/ec2tokens", admin, json=body)
    assert issued.status_code == 200, issued.text
    assert issued.json()["token"]["project"]["id"] == project
    subject = issued.headers["x-subject-token"]
    checked = await identity.call(
        "GET", "/v3/auth/tokens", admin, headers={"X-Subject-Token": subject}
    )
    assert checked.status_code == 200
    body["credentials"]["params"]["Action"] = "TerminateInstances"
    assert (await identity.call("POST", "/v3/ec2tokens", admin, json=body)).status_code == 401


async def test_only_services_and_admins_may_ask(identity: IdentityClient) -> None:
    admin = await identity.token()
    await identity.call("POST", "/v3/projects", admin, json={"project": {"name": "p"}})
    user = (
        await identity.call(
            "POST", "/v3/users", admin, json={"user": {"name": "u", "password": "pw"}}
        )
    ).json()["user"]
    role = (await identity.call("GET", "/v3/roles?name=member", admin)).json()["roles"][0]
    project = (await identity.call("GET", "/v3/projects?name=p", admin)).json()["projects"][0]
    await identity.call(
        "PUT", f"/v3/projects/{project['id']}/users/{user['id']}/roles/{role['id']}", admin
    )
    member = await identity.token("u", "pw", "p")
    body = {"credentials": {"access": "x", "signature": "y", "token": "eg=="}}
    assert (await identity.call("POST", "/v3/s3tokens", member, json=body)).status_code == 403
    assert (await identity.call("POST", "/v3/ec2tokens", member, json=body)).status_code == 403
