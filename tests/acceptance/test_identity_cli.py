"""Identity acceptance: the unmodified openstack CLI and openstacksdk against real processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openstack
import pytest

from tests.acceptance.conftest import (
    ADMIN_PASSWORD,
    Deployment,
    Process,
    free_port,
    issue_token,
    unique,
)


def test_token_issue_and_catalog(cloud: Deployment) -> None:
    token = cloud.json("token", "issue")
    assert token["id"] and token["project_id"] and token["user_id"]
    catalog = cloud.json("catalog", "list")
    identity = next(entry for entry in catalog if entry["Type"] == "identity")
    assert cloud.auth_url in str(identity["Endpoints"])
    endpoints = cloud.json("endpoint", "list", "--service", "identity")
    assert {e["Interface"] for e in endpoints} == {"public", "internal", "admin"}


def test_project_lifecycle(cloud: Deployment) -> None:
    name = unique("proj")
    created = cloud.json("project", "create", "--description", "first", name)
    assert created["name"] == name and created["enabled"] is True
    assert name in [p["Name"] for p in cloud.json("project", "list")]
    cloud.openstack("project", "set", "--description", "second", "--disable", name)
    shown = cloud.json("project", "show", name)
    assert shown["description"] == "second" and shown["enabled"] is False
    cloud.openstack("project", "delete", name)
    assert name not in [p["Name"] for p in cloud.json("project", "list")]
    missing = cloud.openstack("project", "show", name, check=False)
    assert missing.returncode != 0


def test_users_roles_and_own_credentials(cloud: Deployment) -> None:
    project, user = unique("team"), unique("user")
    cloud.json("project", "create", project)
    cloud.json("user", "create", "--password", "user-pw", "--project", project, user)
    cloud.openstack("role", "add", "--user", user, "--project", project, "member")
    assignments = cloud.json("role", "assignment", "list", "--names", "--user", user)
    assert [(a["Role"], a["Project"]) for a in assignments] == [("member", f"{project}@Default")]

    user_env = cloud.env_for(user, "user-pw", project)
    own = cloud.json("token", "issue", env=user_env)
    assert own["project_id"] == cloud.json("project", "show", project)["id"]

    # A member: 403 on admin work, and sees only its own project.
    denied = cloud.openstack("user", "create", unique("x"), env=user_env, check=False)
    assert denied.returncode != 0 and "403" in denied.stderr
    assert [p["Name"] for p in cloud.json("project", "list", env=user_env)] == [project]

    cloud.openstack("user", "set", "--disable", user)
    refused = cloud.openstack("token", "issue", env=user_env, check=False)
    assert refused.returncode != 0 and "401" in refused.stderr


def test_application_credential_authenticates(cloud: Deployment) -> None:
    project, user = unique("ac"), unique("acuser")
    cloud.json("project", "create", project)
    cloud.json("user", "create", "--password", "ac-pw", user)
    cloud.openstack("role", "add", "--user", user, "--project", project, "member")
    user_env = cloud.env_for(user, "ac-pw", project)
    credential = cloud.json(
        "application", "credential", "create", "--role", "member", "ci-cred", env=user_env
    )
    app_env = {
        "OS_AUTH_URL": cloud.auth_url,
        "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_APPLICATION_CREDENTIAL_ID": credential["ID"],
        "OS_APPLICATION_CREDENTIAL_SECRET": credential["Secret"],
        "OS_IDENTITY_API_VERSION": "3",
    }
    token = cloud.json("token", "issue", env=app_env)
    assert token["user_id"] == cloud.json("user", "show", user)["id"]
    wrong = {**app_env, "OS_APPLICATION_CREDENTIAL_SECRET": "not-it"}
    assert cloud.openstack("token", "issue", env=wrong, check=False).returncode != 0


def test_token_revoke_makes_the_token_fail(cloud: Deployment) -> None:
    token = cloud.json("token", "issue")["id"]
    token_env = {
        "OS_AUTH_URL": cloud.auth_url,
        "OS_AUTH_TYPE": "v3token",
        "OS_TOKEN": token,
        "OS_PROJECT_NAME": "admin",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_IDENTITY_API_VERSION": "3",
    }
    assert cloud.json("project", "list", env=token_env)
    cloud.openstack("token", "revoke", token)
    failed = cloud.openstack("project", "list", env=token_env, check=False)
    assert failed.returncode != 0 and "401" in failed.stderr
    if cloud.other_auth_url:
        # The other identity process refuses it too (within its cache window).
        admin = issue_token(cloud.auth_url, "admin", ADMIN_PASSWORD, "admin")
        headers = {"X-Auth-Token": admin.headers["x-subject-token"], "X-Subject-Token": token}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = httpx.get(f"{cloud.other_auth_url}/auth/tokens", headers=headers).status_code
            if status == 404:
                break
            time.sleep(0.2)
        assert status == 404


def test_openstacksdk(cloud: Deployment) -> None:
    conn = openstack.connect(
        auth_url=cloud.auth_url,
        username="admin",
        password=ADMIN_PASSWORD,
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )
    try:
        name = unique("sdk")
        project = conn.identity.create_project(name=name, description="from the sdk")
        assert conn.identity.get_project(project.id).description == "from the sdk"
        user = conn.identity.create_user(
            name=unique("sdkuser"), password="p", default_project_id=project.id
        )
        member = conn.identity.find_role("member")
        conn.identity.assign_project_role_to_user(project, user, member)
        assert conn.identity.validate_user_has_project_role(project, user, member)
        assert {r.name for r in conn.identity.roles()} >= {"admin", "member", "reader"}
        assert conn.identity.find_domain("Default").id == "default"
        conn.identity.delete_user(user)
        conn.identity.delete_project(project)
        assert conn.identity.find_project(name) is None
    finally:
        conn.close()


def test_tokens_validate_across_identity_processes(scale_out: Deployment) -> None:
    assert scale_out.other_auth_url
    issued = issue_token(scale_out.auth_url, "admin", ADMIN_PASSWORD, "admin")
    token = issued.headers["x-subject-token"]
    shown = httpx.get(
        f"{scale_out.other_auth_url}/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": token},
    )
    assert shown.status_code == 200
    assert shown.json()["token"]["project"]["name"] == "admin"
    # And the other way round.
    second = issue_token(scale_out.other_auth_url, "admin", ADMIN_PASSWORD, "admin")
    back = httpx.get(
        f"{scale_out.auth_url}/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": second.headers["x-subject-token"]},
    )
    assert back.status_code == 200


def test_clouds_yaml_and_openrc_work(all_in_one: Deployment) -> None:
    data_dir = Path(all_in_one.extra_env["data_dir"])
    env = {
        "OS_CLIENT_CONFIG_FILE": str(data_dir / "clouds.yaml"),
        "OS_CLOUD": "onestack",
    }
    assert all_in_one.json("token", "issue", env=env)["id"]
    openrc = (data_dir / "openrc").read_text()
    assert "OS_AUTH_URL=" in openrc and oct((data_dir / "openrc").stat().st_mode)[-3:] == "600"


def test_restart_keeps_state_and_tokens(tmp_path: Path) -> None:
    port = free_port()
    args = ["up", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    first = Process([*args, "--admin-password", ADMIN_PASSWORD], tmp_path / "first.out")
    first.wait_ready(auth_url)
    token = issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    headers = {"X-Auth-Token": token}
    created = httpx.post(
        f"{auth_url}/projects", json={"project": {"name": "kept"}}, headers=headers
    )
    assert created.status_code == 201
    assert first.stop() == 0
    # No --admin-password now: the one stored in the data dir is used.
    second = Process(args, tmp_path / "second.out")
    second.wait_ready(auth_url)
    try:
        listed = httpx.get(f"{auth_url}/projects?name=kept", headers=headers)
        assert listed.status_code == 200, "a token from before the restart still validates"
        assert [p["name"] for p in listed.json()["projects"]] == ["kept"]
    finally:
        assert second.stop() == 0
    assert "onestack is up" in (tmp_path / "second.out").read_text()


def test_startup_reports_readiness(all_in_one: Deployment) -> None:
    data_dir = Path(all_in_one.extra_env["data_dir"])
    output = (data_dir / "onestack.out").read_text()
    assert "onestack is up" in output and "OS_CLOUD=onestack" in output
    assert os.path.exists(data_dir / "admin-password")


@pytest.mark.parametrize("path", ["/identity/", "/identity/v3", "/healthcheck", "/metrics"])
def test_public_documents(all_in_one: Deployment, path: str) -> None:
    base = all_in_one.auth_url.removesuffix("/identity/v3")
    response = httpx.get(f"{base}{path}")
    assert response.status_code in (200, 300)
    assert response.headers["x-openstack-request-id"].startswith("req-")
