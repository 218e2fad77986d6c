"""Block storage acceptance: the seed's volume sequence with the real openstack CLI."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.acceptance.conftest import ADMIN_PASSWORD, Deployment, issue_token, unique


class Api:
    """The REST API beside the CLI, for set-up and polling (each CLI run costs seconds)."""

    def __init__(self, cloud: Deployment):
        self.cloud = cloud
        issued = issue_token(cloud.auth_url, "admin", ADMIN_PASSWORD, "admin")
        self.admin = issued.headers["x-subject-token"]
        catalog = issued.json()["token"]["catalog"]
        [storage] = [s for s in catalog if s["type"] == "block-storage"]
        self.volume_url = next(
            e["url"] for e in storage["endpoints"] if e["interface"] == "public"
        ).rsplit("/", 1)[0]

    def member(self, prefix: str) -> tuple[str, dict[str, str]]:
        """A new project with a member user; (project id, the member's OS_* environment)."""
        name = unique(prefix)
        headers = {"X-Auth-Token": self.admin}
        base = self.cloud.auth_url
        project = httpx.post(f"{base}/projects", json={"project": {"name": name}}, headers=headers)
        user = httpx.post(f"{base}/users", headers=headers,
                          json={"user": {"name": f"{name}-user", "password": "pw"}})  # fmt: skip
        role = httpx.get(f"{base}/roles?name=member", headers=headers).json()["roles"][0]["id"]
        project_id = project.json()["project"]["id"]
        grant = f"{base}/projects/{project_id}/users/{user.json()['user']['id']}/roles/{role}"
        assert httpx.put(grant, headers=headers).status_code == 204
        return project_id, self.cloud.env_for(f"{name}-user", "pw", name)

    def wait(self, kind: str, ident: str, wanted: str) -> dict[str, Any]:
        """Poll ``/v3/<kind>s/{id}`` (any project, as admin) until its status is ``wanted``."""
        deadline = time.monotonic() + 60
        while True:
            response = httpx.get(
                f"{self.volume_url}/{kind}s/{ident}", headers={"X-Auth-Token": self.admin}
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()[kind]
            if body["status"] == wanted:
                return body
            assert not body["status"].startswith("error") or wanted == "error", body
            assert time.monotonic() < deadline, f"{kind} {ident} stuck in {body['status']}"
            time.sleep(0.2)


def test_seed_volume_sequence(all_in_one: Deployment) -> None:
    cloud, api = all_in_one, Api(all_in_one)
    services = cloud.json("volume", "service", "list")
    states = {(s["Binary"], s["State"]) for s in services}
    assert {("cinder-scheduler", "up"), ("cinder-volume", "up"), ("cinder-backup", "up")} <= states
    assert any(s["Host"].endswith("@file") for s in services if s["Binary"] == "cinder-volume")

    vol1 = unique("vol1")
    created = cloud.json("volume", "create", "--size", "1", vol1)
    assert (created["status"], created["size"], created["name"]) == ("creating", 1, vol1)
    assert created["type"] == "__DEFAULT__" and created["availability_zone"] == "nova"
    api.wait("volume", created["id"], "available")
    listed = {v["Name"]: v for v in cloud.json("volume", "list")}
    assert (listed[vol1]["Status"], listed[vol1]["Size"]) == ("available", 1)

    snap1 = unique("snap1")
    snapshot = cloud.json("volume", "snapshot", "create", "--volume", vol1, "--force", snap1)
    assert snapshot["status"] == "creating" and snapshot["size"] == 1
    api.wait("snapshot", snapshot["id"], "available")
    vol2 = cloud.json("volume", "create", "--snapshot", snap1, unique("vol2"))
    assert api.wait("volume", vol2["id"], "available")["snapshot_id"] == snapshot["id"]

    cloud.openstack("volume", "set", "--size", "2", vol1)
    assert api.wait("volume", created["id"], "available")["size"] == 2
    shrink = cloud.openstack("volume", "set", "--size", "1", vol1, check=False)
    assert shrink.returncode != 0 and "must be greater" in shrink.stderr

    in_use = cloud.openstack("volume", "delete", vol1, check=False)
    assert in_use.returncode != 0 and "dependent snapshots" in in_use.stderr
    cloud.openstack("volume", "snapshot", "delete", snap1)
    cloud.openstack("volume", "delete", vol1, vol2["id"])


def test_quota_stops_the_third_volume(all_in_one: Deployment) -> None:
    cloud, api = all_in_one, Api(all_in_one)
    project_id, env = api.member("volquota")
    cloud.openstack("quota", "set", "--volumes", "2", project_id)
    shown = {q["Resource"]: q["Limit"] for q in cloud.json("quota", "show", project_id)}
    assert shown["volumes"] == 2
    first = cloud.json("volume", "create", "--size", "1", unique("q"), env=env)
    second = cloud.json("volume", "create", "--size", "1", unique("q"), env=env)
    third = cloud.openstack("volume", "create", "--size", "1", unique("q"), env=env, check=False)
    assert third.returncode != 0
    assert "VolumeLimitExceeded" in third.stderr and "413" in third.stderr
    for volume in (first, second):
        api.wait("volume", volume["id"], "available")
    cloud.openstack("volume", "delete", first["id"], second["id"], env=env)


def test_transfer_to_another_project(all_in_one: Deployment) -> None:
    cloud, api = all_in_one, Api(all_in_one)
    _, giver = api.member("giver")
    taker_id, taker = api.member("taker")
    volume = cloud.json("volume", "create", "--size", "1", unique("gift"), env=giver)
    api.wait("volume", volume["id"], "available")
    request = cloud.json("volume", "transfer", "request", "create", volume["id"], env=giver)
    assert request["volume_id"] == volume["id"] and request["auth_key"]
    cloud.json(
        "volume", "transfer", "request", "accept", "--auth-key", request["auth_key"],
        request["id"], env=taker,
    )  # fmt: skip
    moved = cloud.json("volume", "show", volume["id"], env=taker)
    assert (moved["status"], moved["os-vol-tenant-attr:tenant_id"]) == ("available", taker_id)
    gone = cloud.openstack("volume", "show", volume["id"], env=giver, check=False)
    assert gone.returncode != 0
    cloud.openstack("volume", "delete", volume["id"], env=taker)


def test_volume_type_with_properties(all_in_one: Deployment) -> None:
    cloud, api = all_in_one, Api(all_in_one)
    shared = unique("shared")
    cloud.json("volume", "type", "create", "--property", "volume_backend_name=file", shared)
    cloud.openstack("volume", "type", "set", "--property", "multiattach=<is> True", shared)
    shown = cloud.json("volume", "type", "show", shared)
    assert shown["properties"] == {"volume_backend_name": "file", "multiattach": "<is> True"}
    typed = cloud.json("volume", "create", "--size", "1", "--type", shared, unique("typed"))
    ready = api.wait("volume", typed["id"], "available")
    assert (ready["volume_type"], ready["multiattach"]) == (shared, True)
    nowhere = unique("nowhere")
    cloud.json("volume", "type", "create", "--property", "volume_backend_name=lvm", nowhere)
    lost = cloud.json("volume", "create", "--size", "1", "--type", nowhere, unique("lost"))
    api.wait("volume", lost["id"], "error")
    bad = cloud.openstack("volume", "create", "--size", "0", unique("zero"), check=False)
    assert bad.returncode != 0 and "400" in bad.stderr
    cloud.openstack("volume", "delete", typed["id"], lost["id"])
