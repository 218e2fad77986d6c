"""Identity's migrations and core flows on PostgreSQL and MariaDB, as the scale-out runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.backends import database_url
from tests.conftest import IdentityClient, make_settings, start_identity


@pytest.fixture(params=["postgresql", "mariadb"])
async def identity_on(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[IdentityClient]:
    settings = make_settings(tmp_path)
    settings.database.default = database_url(request.param, tmp_path)
    unit, client = await start_identity(settings)
    try:
        yield IdentityClient(unit, client)
    finally:
        await client.aclose()
        await unit.stop()


async def test_token_grant_and_revocation(identity_on: IdentityClient) -> None:
    admin = await identity_on.token()
    created = await identity_on.call(
        "POST", "/v3/users", admin, json={"user": {"name": "pat", "password": "pat-pw"}}
    )
    assert created.status_code == 201
    user = created.json()["user"]
    member = (await identity_on.call("GET", "/v3/roles?name=member", admin)).json()["roles"][0]
    project = (await identity_on.call("GET", "/v3/projects?name=admin", admin)).json()["projects"][
        0
    ]
    grant = f"/v3/projects/{project['id']}/users/{user['id']}/roles/{member['id']}"
    assert (await identity_on.call("PUT", grant, admin)).status_code == 204
    token = await identity_on.token("pat", "pat-pw", "admin")
    assert (await identity_on.call("GET", "/v3/auth/projects", token)).status_code == 200
    changed = await identity_on.call(
        "PATCH", f"/v3/users/{user['id']}", admin, json={"user": {"password": "new"}}
    )
    assert changed.status_code == 200
    assert (await identity_on.call("GET", "/v3/auth/projects", token)).status_code == 401
    # Sub-second revocation ordering holds on this backend too.
    assert await identity_on.token("pat", "new", "admin")
    duplicate = await identity_on.call("POST", "/v3/users", admin, json={"user": {"name": "pat"}})
    assert duplicate.status_code == 409
