"""The Keystone v3 API in-process: tokens, resources, policy, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from onestack.identity.models import Credential
from tests.conftest import ADMIN_PASSWORD, IdentityClient


async def create(identity: IdentityClient, token: str, kind: str, body: dict[str, Any]) -> dict:
    response = await identity.call("POST", f"/v3/{kind}s", token, json={kind: body})
    assert response.status_code == 201, response.text
    return response.json()[kind]


async def member_of_new_project(
    identity: IdentityClient, admin: str, name: str, role: str = "member"
) -> tuple[dict, dict, str]:
    """A new project and a user holding ``role`` on it; returns both and the user's token."""
    project = await create(identity, admin, "project", {"name": f"{name}-project"})
    user = await create(identity, admin, "user", {"name": name, "password": f"{name}-pw"})
    roles = (await identity.call("GET", f"/v3/roles?name={role}", admin)).json()["roles"]
    grant = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{roles[0]['id']}"
    assert (await identity.call("PUT", grant, admin)).status_code == 204
    token = await identity.token(name, f"{name}-pw", project["name"])
    return project, user, token


async def test_version_documents(identity: IdentityClient) -> None:
    root = await identity.http.get("/")
    assert root.status_code == 300
    assert root.json()["versions"]["values"][0]["id"].startswith("v3")
    v3 = await identity.http.get("/v3")
    assert v3.status_code == 200
    assert v3.json()["version"]["status"] == "stable"


async def test_token_body_has_what_clients_read(identity: IdentityClient) -> None:
    response = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"name": "Default"},
                            "password": ADMIN_PASSWORD,
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
            }
        },
    )
    assert response.status_code == 201
    token = response.json()["token"]
    assert token["expires_at"].endswith("Z") and token["issued_at"].endswith("Z")
    assert token["user"]["domain"] == {"id": "default", "name": "Default"}
    assert token["project"]["name"] == "admin"
    assert {r["name"] for r in token["roles"]} == {"admin", "member", "reader"}
    identity_service = next(s for s in token["catalog"] if s["type"] == "identity")
    interfaces = {e["interface"] for e in identity_service["endpoints"]}
    assert interfaces == {"public", "internal", "admin"}
    assert all(e["region"] == "RegionOne" for e in identity_service["endpoints"])
    assert len(response.headers["x-subject-token"]) < 255


@pytest.mark.parametrize(
    "user,password",
    [("admin", "wrong"), ("nobody", "whatever")],
)
async def test_failed_login_does_not_say_whether_user_exists(
    identity: IdentityClient, user: str, password: str
) -> None:
    response = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                }
            }
        },
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"auth": {}}',
        b'{"auth": {"identity": {"methods": "password"}}}',
        b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {}}}}}',
    ],
)
async def test_malformed_auth_requests_are_400(identity: IdentityClient, body: bytes) -> None:
    response = await identity.http.post("/v3/auth/tokens", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


async def test_validate_check_and_revoke(identity: IdentityClient) -> None:
    admin = await identity.token()
    other = await identity.token()
    headers = {"X-Subject-Token": other}
    shown = await identity.call("GET", "/v3/auth/tokens", admin, headers=headers)
    assert shown.status_code == 200
    assert shown.headers["x-subject-token"] == other
    assert (
        await identity.call("HEAD", "/v3/auth/tokens", admin, headers=headers)
    ).status_code == 200
    assert (
        await identity.call("DELETE", "/v3/auth/tokens", admin, headers=headers)
    ).status_code == 204
    assert (
        await identity.call("GET", "/v3/auth/tokens", admin, headers=headers)
    ).status_code == 404
    assert (await identity.call("GET", "/v3/users", other)).status_code == 401
    # Revoking one token leaves the others alone.
    assert (await identity.call("GET", "/v3/users", admin)).status_code == 200


@pytest.mark.parametrize("token", ["garbage", "gAAAAAB" + "x" * 170, ""])
async def test_bad_tokens_are_401(identity: IdentityClient, token: str) -> None:
    response = await identity.call("GET", "/v3/users", token)
    assert response.status_code == 401


async def test_expired_token_is_rejected(identity: IdentityClient) -> None:
    identity.unit.service.settings.identity.token_expiration = 1
    token = await identity.token()
    assert (await identity.call("GET", "/v3/users", token)).status_code == 200
    await asyncio.sleep(1.2)
    assert (await identity.call("GET", "/v3/users", token)).status_code == 401


async def test_scopes_domain_system_unscoped(identity: IdentityClient) -> None:
    admin = await identity.token()
    user = (await identity.call("GET", "/v3/users?name=admin", admin)).json()["users"][0]
    admin_role = (await identity.call("GET", "/v3/roles?name=admin", admin)).json()["roles"][0]
    grant = f"/v3/domains/default/users/{user['id']}/roles/{admin_role['id']}"
    assert (await identity.call("PUT", grant, admin)).status_code == 204
    domain_token = await identity.token(project=None, domain={"id": "default"})
    system_token = await identity.token(project=None, system={"all": True})
    for token, key in ((domain_token, "domain"), (system_token, "system")):
        body = (
            await identity.call("GET", "/v3/auth/tokens", admin, headers={"X-Subject-Token": token})
        ).json()["token"]
        assert key in body and "project" not in body
    unscoped = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"id": user["id"], "password": ADMIN_PASSWORD},
                    },
                },
                "scope": "unscoped",
            }
        },
    )
    assert unscoped.status_code == 201
    assert "roles" not in unscoped.json()["token"]
    projects = await identity.call("GET", "/v3/auth/projects", unscoped.headers["x-subject-token"])
    assert [p["name"] for p in projects.json()["projects"]] == ["admin"]
    system = await identity.call("GET", "/v3/auth/system", admin)
    assert system.json()["system"] == [{"all": True}]


async def test_rescope_with_token_method_keeps_audit_chain(identity: IdentityClient) -> None:
    admin = await identity.token()
    rescoped = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": admin}},
                "scope": {"project": {"name": "service", "domain": {"id": "default"}}},
            }
        },
    )
    assert rescoped.status_code == 401  # admin holds no role on the service project
    rescoped = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": admin}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        },
    )
    assert rescoped.status_code == 201
    original = (
        await identity.call("GET", "/v3/auth/tokens", admin, headers={"X-Subject-Token": admin})
    ).json()["token"]
    audit_ids = rescoped.json()["token"]["audit_ids"]
    assert len(audit_ids) == 2 and audit_ids[1] == original["audit_ids"][0]
    # Revoking the original revokes the whole chain.
    await identity.call("DELETE", "/v3/auth/tokens", admin, headers={"X-Subject-Token": admin})
    assert (
        await identity.call("GET", "/v3/users", rescoped.headers["x-subject-token"])
    ).status_code == 401


async def test_member_is_confined_to_its_project(identity: IdentityClient) -> None:
    admin = await identity.token()
    project_a, user_a, token_a = await member_of_new_project(identity, admin, "alice")
    project_b, _, _ = await member_of_new_project(identity, admin, "bob")
    # As Keystone: the project list is for admins; a member asks for its own projects.
    assert (await identity.call("GET", "/v3/projects", token_a)).status_code == 403
    own = await identity.call("GET", f"/v3/users/{user_a['id']}/projects", token_a)
    assert [p["id"] for p in own.json()["projects"]] == [project_a["id"]]
    assert (
        await identity.call("GET", f"/v3/projects/{project_b['id']}", token_a)
    ).status_code == 403
    assert (
        await identity.call("GET", f"/v3/projects/{project_a['id']}", token_a)
    ).status_code == 200
    denied = await identity.call("POST", "/v3/users", token_a, json={"user": {"name": "x"}})
    assert denied.status_code == 403
    assert denied.json()["error"]["title"] == "Forbidden"
    for method, path in (
        ("POST", "/v3/projects"),
        ("POST", "/v3/roles"),
        ("POST", "/v3/services"),
        ("POST", "/v3/endpoints"),
        ("POST", "/v3/regions"),
        ("GET", "/v3/users"),
        ("GET", "/v3/role_assignments"),
        ("DELETE", f"/v3/projects/{project_b['id']}"),
    ):
        response = await identity.call(method, path, token_a, json={})
        assert response.status_code == 403, (method, path, response.text)
    # A member cannot get a token for a project it holds no role on.
    bad = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"id": user_a["id"], "password": "alice-pw"},
                    },
                },
                "scope": {"project": {"id": project_b["id"]}},
            }
        },
    )
    assert bad.status_code == 401
    assert (await identity.call("GET", f"/v3/users/{user_a['id']}", token_a)).status_code == 200


async def test_reader_cannot_write(identity: IdentityClient) -> None:
    admin = await identity.token()
    _, _, reader = await member_of_new_project(identity, admin, "rita", role="reader")
    response = await identity.call("POST", "/v3/projects", reader, json={"project": {"name": "n"}})
    assert response.status_code == 403


async def test_disable_user_and_project_revoke_tokens(identity: IdentityClient) -> None:
    admin = await identity.token()
    project, user, token = await member_of_new_project(identity, admin, "carol")
    assert (await identity.call("GET", "/v3/auth/projects", token)).status_code == 200
    patched = await identity.call(
        "PATCH", f"/v3/users/{user['id']}", admin, json={"user": {"enabled": False}}
    )
    assert patched.json()["user"]["enabled"] is False
    assert (await identity.call("GET", "/v3/auth/projects", token)).status_code == 401
    await identity.call("PATCH", f"/v3/users/{user['id']}", admin, json={"user": {"enabled": True}})
    token = await identity.token("carol", "carol-pw", project["name"])
    await identity.call(
        "PATCH", f"/v3/projects/{project['id']}", admin, json={"project": {"enabled": False}}
    )
    assert (await identity.call("GET", "/v3/auth/projects", token)).status_code == 401


async def test_change_own_password(identity: IdentityClient) -> None:
    admin = await identity.token()
    project, user, token = await member_of_new_project(identity, admin, "dave")
    wrong = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/password",
        token,
        json={"user": {"password": "new-pw", "original_password": "nope"}},
    )
    assert wrong.status_code == 401
    changed = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/password",
        token,
        json={"user": {"password": "new-pw", "original_password": "dave-pw"}},
    )
    assert changed.status_code == 204
    assert (await identity.call("GET", "/v3/auth/projects", token)).status_code == 401
    # The new password works at once (no second-granularity revocation race).
    assert await identity.token("dave", "new-pw", project["name"])


async def test_role_removal_revokes_and_implied_roles_apply(identity: IdentityClient) -> None:
    admin = await identity.token()
    project, user, token = await member_of_new_project(identity, admin, "erin")
    body = (
        await identity.call("GET", "/v3/auth/tokens", admin, headers={"X-Subject-Token": token})
    ).json()["token"]
    assert {r["name"] for r in body["roles"]} == {"member", "reader"}
    member = (await identity.call("GET", "/v3/roles?name=member", admin)).json()["roles"][0]
    grant = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{member['id']}"
    assert (await identity.call("HEAD", grant, admin)).status_code == 204
    assert (await identity.call("DELETE", grant, admin)).status_code == 204
    assert (await identity.call("GET", grant, admin)).status_code == 404
    assert (await identity.call("GET", "/v3/auth/projects", token)).status_code == 401


async def test_groups_grant_roles_to_members(identity: IdentityClient) -> None:
    admin = await identity.token()
    project = await create(identity, admin, "project", {"name": "grp-project"})
    user = await create(identity, admin, "user", {"name": "gina", "password": "gina-pw"})
    group = await create(identity, admin, "group", {"name": "devs"})
    member = (await identity.call("GET", "/v3/roles?name=member", admin)).json()["roles"][0]
    await identity.call(
        "PUT", f"/v3/projects/{project['id']}/groups/{group['id']}/roles/{member['id']}", admin
    )
    assert (
        await identity.call("PUT", f"/v3/groups/{group['id']}/users/{user['id']}", admin)
    ).status_code == 204
    token = await identity.token("gina", "gina-pw", "grp-project")
    effective = await identity.call(
        "GET", f"/v3/role_assignments?effective&include_names&user.id={user['id']}", admin
    )
    assignments = effective.json()["role_assignments"]
    names = {a["role"]["name"] for a in assignments}
    assert names == {"member", "reader"}
    assert all(a["scope"]["project"]["name"] == "grp-project" for a in assignments)
    assert all("membership" in a["links"] for a in assignments)
    users = await identity.call("GET", f"/v3/groups/{group['id']}/users", admin)
    assert [u["name"] for u in users.json()["users"]] == ["gina"]
    await identity.call("DELETE", f"/v3/groups/{group['id']}/users/{user['id']}", admin)
    assert (await identity.call("GET", "/v3/auth/projects", token)).status_code == 401


async def test_application_credential_lifecycle(identity: IdentityClient) -> None:
    admin = await identity.token()
    project, user, token = await member_of_new_project(identity, admin, "frank")
    created = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/application_credentials",
        token,
        json={"application_credential": {"name": "ci", "roles": [{"name": "reader"}]}},
    )
    assert created.status_code == 201, created.text
    cred = created.json()["application_credential"]
    assert cred["secret"] and cred["project_id"] == project["id"]
    assert [r["name"] for r in cred["roles"]] == ["reader"]
    auth = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": cred["id"], "secret": cred["secret"]},
                }
            }
        },
    )
    assert auth.status_code == 201, auth.text
    body = auth.json()["token"]
    assert body["project"]["id"] == project["id"]
    assert [r["name"] for r in body["roles"]] == ["reader"]
    assert body["application_credential"]["id"] == cred["id"]
    wrong = await identity.http.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": cred["id"], "secret": "wrong"},
                }
            }
        },
    )
    assert wrong.status_code == 401
    escalate = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/application_credentials",
        token,
        json={"application_credential": {"name": "x", "roles": [{"name": "admin"}]}},
    )
    assert escalate.status_code == 403
    listed = await identity.call("GET", f"/v3/users/{user['id']}/application_credentials", token)
    assert [c["name"] for c in listed.json()["application_credentials"]] == ["ci"]
    assert "secret" not in listed.json()["application_credentials"][0]
    app_token = auth.headers["x-subject-token"]
    deleted = await identity.call(
        "DELETE", f"/v3/users/{user['id']}/application_credentials/{cred['id']}", token
    )
    assert deleted.status_code == 204
    assert (await identity.call("GET", "/v3/auth/catalog", app_token)).status_code == 401


async def test_projects_hierarchy_tags_and_conflicts(identity: IdentityClient) -> None:
    admin = await identity.token()
    parent = await create(identity, admin, "project", {"name": "parent", "tags": ["a", "b"]})
    child = await create(identity, admin, "project", {"name": "child", "parent_id": parent["id"]})
    assert child["parent_id"] == parent["id"]
    assert (await identity.call("DELETE", f"/v3/projects/{parent['id']}", admin)).status_code == 403
    dup = await identity.call("POST", "/v3/projects", admin, json={"project": {"name": "parent"}})
    assert dup.status_code == 409
    tagged = await identity.call("GET", "/v3/projects?tags=a,b", admin)
    assert [p["name"] for p in tagged.json()["projects"]] == ["parent"]
    assert (
        await identity.call("PUT", f"/v3/projects/{parent['id']}/tags/c", admin)
    ).status_code == 201
    tags = await identity.call("GET", f"/v3/projects/{parent['id']}/tags", admin)
    assert tags.json()["tags"] == ["a", "b", "c"]
    bad = await identity.call(
        "POST", "/v3/projects", admin, json={"project": {"name": "x", "parent_id": "nope"}}
    )
    assert bad.status_code == 404
    wrong_type = await identity.call("POST", "/v3/projects", admin, json={"project": {"name": 5}})
    assert wrong_type.status_code == 400
    assert (await identity.call("DELETE", f"/v3/projects/{child['id']}", admin)).status_code == 204
    assert (await identity.call("DELETE", f"/v3/projects/{parent['id']}", admin)).status_code == 204


async def test_domains_lifecycle(identity: IdentityClient) -> None:
    admin = await identity.token()
    domain = await create(identity, admin, "domain", {"name": "acme"})
    user = await create(identity, admin, "user", {"name": "u", "domain_id": domain["id"]})
    assert user["domain_id"] == domain["id"]
    enabled = await identity.call("DELETE", f"/v3/domains/{domain['id']}", admin)
    assert enabled.status_code == 403
    await identity.call(
        "PATCH", f"/v3/domains/{domain['id']}", admin, json={"domain": {"enabled": False}}
    )
    assert (await identity.call("DELETE", f"/v3/domains/{domain['id']}", admin)).status_code == 204
    assert (await identity.call("GET", f"/v3/users/{user['id']}", admin)).status_code == 404
    found = await identity.call("GET", "/v3/domains?name=Default", admin)
    assert [d["id"] for d in found.json()["domains"]] == ["default"]


async def test_catalog_crud_shows_in_tokens(identity: IdentityClient) -> None:
    admin = await identity.token()
    region = await create(identity, admin, "region", {"id": "RegionTwo"})
    service = await create(identity, admin, "service", {"type": "widget", "name": "widgets"})
    endpoint = await create(
        identity,
        admin,
        "endpoint",
        {
            "service_id": service["id"],
            "interface": "public",
            "url": "http://w/$(project_id)s",
            "region_id": region["id"],
        },
    )
    bad = await identity.call(
        "POST",
        "/v3/endpoints",
        admin,
        json={"endpoint": {"service_id": service["id"], "interface": "sideways", "url": "x"}},
    )
    assert bad.status_code == 400
    catalog = (await identity.call("GET", "/v3/auth/catalog", admin)).json()["catalog"]
    widget = next(s for s in catalog if s["type"] == "widget")
    project_id = (await identity.call("GET", "/v3/projects?name=admin", admin)).json()["projects"][
        0
    ]["id"]
    assert widget["endpoints"][0]["url"] == f"http://w/{project_id}"
    assert (
        await identity.call("DELETE", f"/v3/endpoints/{endpoint['id']}", admin)
    ).status_code == 204
    assert (
        await identity.call("DELETE", f"/v3/services/{service['id']}", admin)
    ).status_code == 204
    assert (await identity.call("DELETE", f"/v3/regions/{region['id']}", admin)).status_code == 204


async def test_ec2_credentials_are_encrypted_at_rest(identity: IdentityClient) -> None:
    admin = await identity.token()
    project, user, token = await member_of_new_project(identity, admin, "gus")
    created = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/credentials/OS-EC2",
        token,
        json={"tenant_id": project["id"]},
    )
    assert created.status_code == 201
    cred = created.json()["credential"]
    assert cred["tenant_id"] == project["id"] and len(cred["secret"]) == 32
    async with identity.unit.service.db.session() as session:
        blobs = list((await session.execute(select(Credential.blob))).scalars())
    assert blobs and all(cred["secret"] not in blob for blob in blobs)
    listed = await identity.call("GET", f"/v3/users/{user['id']}/credentials/OS-EC2", token)
    assert [c["access"] for c in listed.json()["credentials"]] == [cred["access"]]
    _, _, other = await member_of_new_project(identity, admin, "hank")
    assert (
        await identity.call("GET", f"/v3/users/{user['id']}/credentials/OS-EC2", other)
    ).status_code == 403
    path = f"/v3/users/{user['id']}/credentials/OS-EC2/{cred['access']}"
    assert (await identity.call("DELETE", path, token)).status_code == 204
    assert (await identity.call("GET", path, token)).status_code == 404


async def test_unknown_routes_and_methods(identity: IdentityClient) -> None:
    admin = await identity.token()
    missing = await identity.call("GET", "/v3/nothing-here", admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404
    wrong = await identity.call("PUT", "/v3/users", admin)
    assert wrong.status_code == 405
    assert missing.headers["x-openstack-request-id"].startswith("req-")


async def test_unified_limits(identity: IdentityClient) -> None:
    admin = await identity.token()
    service = await create(identity, admin, "service", {"type": "image", "name": "glance"})
    registered = await identity.call(
        "POST",
        "/v3/registered_limits",
        admin,
        json={
            "registered_limits": [
                {
                    "service_id": service["id"],
                    "resource_name": "image_count_total",
                    "default_limit": 10,
                }
            ]
        },
    )
    assert registered.status_code == 201
    project, _, member = await member_of_new_project(identity, admin, "lim")
    entry = {
        "service_id": service["id"],
        "project_id": project["id"],
        "resource_name": "image_count_total",
        "resource_limit": 2,
    }
    created = await identity.call("POST", "/v3/limits", admin, json={"limits": [entry]})
    assert created.status_code == 201
    limit = created.json()["limits"][0]
    assert (
        await identity.call("POST", "/v3/limits", admin, json={"limits": [entry]})
    ).status_code == 409
    unregistered = {**entry, "resource_name": "image_size_total"}
    assert (
        await identity.call("POST", "/v3/limits", admin, json={"limits": [unregistered]})
    ).status_code == 400
    negative = {**entry, "resource_limit": -5}
    assert (
        await identity.call("POST", "/v3/limits", admin, json={"limits": [negative]})
    ).status_code == 400
    assert (
        await identity.call("POST", "/v3/limits", member, json={"limits": [entry]})
    ).status_code == 403
    own = await identity.call("GET", "/v3/limits", member)
    assert [item["id"] for item in own.json()["limits"]] == [limit["id"]]
    patched = await identity.call(
        "PATCH", f"/v3/limits/{limit['id']}", admin, json={"limit": {"resource_limit": 3}}
    )
    assert patched.json()["limit"]["resource_limit"] == 3
    model = await identity.call("GET", "/v3/limits/model", admin)
    assert model.json()["model"]["name"] == "flat"
    assert (await identity.call("DELETE", f"/v3/limits/{limit['id']}", admin)).status_code == 204
