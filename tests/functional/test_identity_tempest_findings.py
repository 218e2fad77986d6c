"""What Tempest's identity API tests found, kept as tests (CI does not run Tempest)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from onestack.identity import tokens as tokens_module
from tests.conftest import IdentityClient
from tests.functional.test_identity_api import create, member_of_new_project


async def test_catalog_survives_a_refresh_during_its_load(
    identity: IdentityClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent token requests: one clears the cached catalog while another loads it."""
    token_service = identity.unit.service.tokens
    real_load = tokens_module.load_catalog

    async def load_then_cleared(session: Any) -> list[dict[str, Any]]:
        catalog = await real_load(session)
        token_service._catalog = None  # what a concurrent _refresh does
        return catalog

    token_service._catalog = None
    monkeypatch.setattr(tokens_module, "load_catalog", load_then_cleared)
    catalog = await token_service.catalog()
    assert [service["type"] for service in catalog] == ["identity"]
    assert await identity.token()


async def test_admin_changes_a_users_password_knowing_the_original(
    identity: IdentityClient,
) -> None:
    admin = await identity.token()
    user = await create(identity, admin, "user", {"name": "frank", "password": "old-pw"})
    changed = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/password",
        admin,
        json={"user": {"password": "new-pw", "original_password": "old-pw"}},
    )
    assert changed.status_code == 204, changed.text
    assert await identity.token("frank", "new-pw", project=None)
    _, _, stranger = await member_of_new_project(identity, admin, "gina")
    refused = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/password",
        stranger,
        json={"user": {"password": "x", "original_password": "new-pw"}},
    )
    assert refused.status_code == 403


async def test_domain_roles_only_stand_for_what_they_imply(identity: IdentityClient) -> None:
    admin = await identity.token()
    domain = await create(identity, admin, "domain", {"name": "d1"})
    domain_role = await create(identity, admin, "role", {"name": "dr", "domain_id": domain["id"]})
    global_role = await create(identity, admin, "role", {"name": "gr"})
    project, user, _ = await member_of_new_project(identity, admin, "hank")
    grant = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{domain_role['id']}"
    assert (await identity.call("PUT", grant, admin)).status_code == 204
    # Member and reader come from the helper's grant; the domain role itself never shows.
    query = f"/v3/role_assignments?effective&user.id={user['id']}&scope.project.id={project['id']}"
    roles = {
        a["role"]["id"]
        for a in (await identity.call("GET", query, admin)).json()["role_assignments"]
    }
    assert domain_role["id"] not in roles
    # A domain role may imply a global one; the reverse is 403.
    forward = f"/v3/roles/{domain_role['id']}/implies/{global_role['id']}"
    assert (await identity.call("PUT", forward, admin)).status_code == 201
    backward = f"/v3/roles/{global_role['id']}/implies/{domain_role['id']}"
    assert (await identity.call("PUT", backward, admin)).status_code == 403
    roles = {
        a["role"]["id"]
        for a in (await identity.call("GET", query, admin)).json()["role_assignments"]
    }
    assert global_role["id"] in roles and domain_role["id"] not in roles
    token = await identity.token("hank", "hank-pw", project["name"])
    body = (
        await identity.call("GET", "/v3/auth/tokens", admin, headers={"X-Subject-Token": token})
    ).json()["token"]
    assert {r["name"] for r in body["roles"]} == {"member", "reader", "gr"}


async def test_region_created_with_its_id_and_by_a_legacy_endpoint(
    identity: IdentityClient,
) -> None:
    admin = await identity.token()
    put = await identity.call("PUT", "/v3/regions/east", admin, json={"region": {}})
    assert put.status_code == 201, put.text
    assert put.json()["region"]["id"] == "east"
    again = await identity.call("PUT", "/v3/regions/east", admin, json={"region": {}})
    assert again.status_code == 409
    mismatch = await identity.call("PUT", "/v3/regions/x", admin, json={"region": {"id": "y"}})
    assert mismatch.status_code == 400
    service = await create(identity, admin, "service", {"type": "thing", "name": "thing"})
    endpoint = await create(
        identity,
        admin,
        "endpoint",
        {"service_id": service["id"], "interface": "public", "url": "http://t", "region": "west"},
    )
    assert endpoint["region_id"] == "west"
    assert (await identity.call("GET", "/v3/regions/west", admin)).status_code == 200
    unknown = await identity.call(
        "POST",
        "/v3/endpoints",
        admin,
        json={
            "endpoint": {
                "service_id": service["id"],
                "interface": "public",
                "url": "http://t",
                "region_id": "north",
            }
        },
    )
    assert unknown.status_code == 400
    for enabled in ("True", "False"):
        bad = await identity.call(
            "PATCH",
            f"/v3/endpoints/{endpoint['id']}",
            admin,
            json={"endpoint": {"enabled": enabled}},
        )
        assert bad.status_code == 400


async def test_project_name_over_64_characters_is_400(identity: IdentityClient) -> None:
    admin = await identity.token()
    response = await identity.call(
        "POST", "/v3/projects", admin, json={"project": {"name": "a" * 65}}
    )
    assert response.status_code == 400


async def test_application_credential_expiry_reads_back_as_sent(identity: IdentityClient) -> None:
    admin = await identity.token()
    user = (await identity.call("GET", "/v3/users?name=admin", admin)).json()["users"][0]
    expires = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)
    response = await identity.call(
        "POST",
        f"/v3/users/{user['id']}/application_credentials",
        admin,
        json={"application_credential": {"name": "ac", "expires_at": expires.isoformat()}},
    )
    assert response.status_code == 201, response.text
    assert response.json()["application_credential"]["expires_at"] == expires.isoformat()


async def test_unscoped_token_has_no_catalog_and_domain_names_stop_at_64(
    identity: IdentityClient,
) -> None:
    admin = await identity.token()
    await create(identity, admin, "user", {"name": "ivy", "password": "ivy-pw"})
    unscoped = await identity.token("ivy", "ivy-pw", project=None)
    body = (
        await identity.call("GET", "/v3/auth/tokens", admin, headers={"X-Subject-Token": unscoped})
    ).json()["token"]
    assert "catalog" not in body and "roles" not in body
    long_name = await identity.call(
        "POST", "/v3/domains", admin, json={"domain": {"name": "d" * 65}}
    )
    assert long_name.status_code == 400
