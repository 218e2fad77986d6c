"""Object storage acceptance: the openstack CLI and python-swiftclient against `onestack up`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Deployment, issue_token, unique


def swift(cloud: Deployment, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the real ``swift`` CLI (python-swiftclient) with keystone v3 credentials."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}
    done = subprocess.run(
        [str(BIN / "swift"), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or cloud.env_for())},
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"swift {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def member_of_new_project(cloud: Deployment, project: str, user: str) -> tuple[str, str]:
    """A project with a member user (password ``pw``), made over the identity API."""
    admin = issue_token(cloud.auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    headers = {"X-Auth-Token": admin}
    api = cloud.auth_url
    project_id = httpx.post(
        f"{api}/projects", json={"project": {"name": project}}, headers=headers
    ).json()["project"]["id"]
    user_id = httpx.post(
        f"{api}/users", json={"user": {"name": user, "password": "pw"}}, headers=headers
    ).json()["user"]["id"]
    role = httpx.get(f"{api}/roles?name=member", headers=headers).json()["roles"][0]["id"]
    httpx.put(f"{api}/projects/{project_id}/users/{user_id}/roles/{role}", headers=headers)
    token = issue_token(api, user, "pw", project).headers["x-subject-token"]
    return project_id, token


def account_url(cloud: Deployment) -> str:
    stat = swift(cloud, "stat")
    account = next(
        line.split(":", 1)[1].strip()
        for line in stat.splitlines()
        if line.strip().startswith("Account:")
    )
    return f"http://127.0.0.1:{cloud.extra_env['port']}/object/v1/{account}"


def test_openstack_cli_container_and_object_commands(
    all_in_one: Deployment, tmp_path: Path
) -> None:
    cloud = all_in_one
    container = unique("c1")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"the seed says: three replicas in distinct zones\n")
    made = cloud.json("container", "create", container)
    assert made[0]["container"] == container
    created = cloud.json("object", "create", container, str(source))
    assert created[0]["etag"] == hashlib.md5(source.read_bytes()).hexdigest()
    listed = cloud.json("object", "list", container)
    assert [o["Name"] for o in listed] == [str(source)]
    shown = cloud.json("object", "show", container, str(source))
    assert shown["content-length"] == str(source.stat().st_size)
    assert shown["content-type"] == "text/plain"
    saved = tmp_path / "saved.txt"
    cloud.openstack("object", "save", "--file", str(saved), container, str(source))
    assert saved.read_bytes() == source.read_bytes()
    cloud.openstack("container", "set", "--property", "color=blue", container)
    info = cloud.json("container", "show", container)
    assert info["properties"] == {"color": "blue"} and int(info["object_count"]) == 1
    account = cloud.json("object", "store", "account", "show")
    assert account["Account"].startswith("AUTH_") and int(account["Containers"]) >= 1
    cloud.openstack("container", "delete", "--recursive", container)


def test_swiftclient_segmented_upload_download_public_and_tempurl(
    all_in_one: Deployment, tmp_path: Path
) -> None:
    cloud = all_in_one
    container = unique("big")
    data = os.urandom(25 * 1024 * 1024 + 123)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    swift(cloud, "upload", "--segment-size", "10M", container, str(big), "--object-name", "big.bin")
    segments = swift(cloud, "list", f"{container}_segments").split()
    assert len(segments) == 3 and all("/slo/" in s for s in segments)
    stat = swift(cloud, "stat", container, "big.bin")
    assert "X-Static-Large-Object: True" in stat and f"Content Length: {len(data)}" in stat
    out = tmp_path / "out.bin"
    swift(cloud, "download", container, "big.bin", "-o", str(out))
    assert out.read_bytes() == data

    url = f"{account_url(cloud)}/{container}/big.bin"
    assert httpx.get(url, timeout=60).status_code == 401
    swift(cloud, "post", "-r", ".r:*", container)
    public = httpx.get(url, timeout=60)
    assert (
        public.status_code == 200
        and hashlib.md5(public.content).digest() == hashlib.md5(data).digest()
    )

    small = tmp_path / "small.txt"
    small.write_bytes(b"temporary access")
    private = unique("private")
    swift(cloud, "upload", private, str(small), "--object-name", "small.txt")
    swift(cloud, "post", "-m", "Temp-URL-Key:acceptance-key")
    path = url.split("/object", 1)[1].replace(f"{container}/big.bin", f"{private}/small.txt")
    signed = swift(cloud, "tempurl", "GET", "3", path, "acceptance-key").strip()
    base = url.split("/object/", 1)[0] + "/object"
    assert httpx.get(base + path, timeout=30).status_code == 401
    granted = httpx.get(base + signed, timeout=30)
    assert granted.status_code == 200 and granted.content == b"temporary access"
    time.sleep(3.5)
    expired = httpx.get(base + signed, timeout=30)
    assert expired.status_code == 401 and expired.text == "Temp URL expired\n"


def test_second_project_cannot_read_without_an_acl(all_in_one: Deployment, tmp_path: Path) -> None:
    cloud = all_in_one
    container = unique("mine")
    note = tmp_path / "n.txt"
    note.write_bytes(b"only mine")
    swift(cloud, "upload", container, str(note), "--object-name", "n.txt")
    project, user = unique("proj"), unique("user")
    project_id, token = member_of_new_project(cloud, project, user)
    url = f"{account_url(cloud)}/{container}/n.txt"
    assert httpx.get(url, headers={"X-Auth-Token": token}).status_code == 403
    theirs = cloud.json("container", "list", env=cloud.env_for(user, "pw", project))
    assert container not in [c["Name"] for c in theirs]
    swift(cloud, "post", "-r", f"{project_id}:*", container)
    allowed = httpx.get(url, headers={"X-Auth-Token": token})
    assert allowed.status_code == 200 and allowed.content == b"only mine"
