"""Block storage acceptance: the seed's volume sequence with the real openstack CLI."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import (
    ADMIN_PASSWORD,
    Deployment,
    Process,
    free_port,
    issue_token,
    unique,
)
from tests.backends import database_url


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

    def wait_gone(self, kind: str, ident: str) -> None:
        """Poll until ``/v3/<kind>s/{id}`` answers 404."""
        deadline = time.monotonic() + 60
        url = f"{self.volume_url}/{kind}s/{ident}"
        while httpx.get(url, headers={"X-Auth-Token": self.admin}).status_code != 404:
            assert time.monotonic() < deadline, f"{kind} {ident} was not deleted"
            time.sleep(0.2)

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

    path = volume_file(cloud, created["id"])
    with open(path, "r+b") as handle:  # what a guest would have written
        handle.seek(3 << 20)
        handle.write(os.urandom(1 << 20))
    written = file_digest(path)
    snap1 = unique("snap1")
    snapshot = cloud.json("volume", "snapshot", "create", "--volume", vol1, "--force", snap1)
    assert snapshot["status"] == "creating" and snapshot["size"] == 1
    api.wait("snapshot", snapshot["id"], "available")
    vol2 = cloud.json("volume", "create", "--snapshot", snap1, unique("vol2"))
    assert api.wait("volume", vol2["id"], "available")["snapshot_id"] == snapshot["id"]
    assert file_digest(volume_file(cloud, vol2["id"])) == written

    cloud.openstack("volume", "set", "--size", "2", vol1)
    assert api.wait("volume", created["id"], "available")["size"] == 2
    shrink = cloud.openstack("volume", "set", "--size", "1", vol1, check=False)
    assert shrink.returncode != 0 and "must be greater" in shrink.stderr
    snap2 = cloud.json("volume", "snapshot", "create", "--volume", vol1, unique("snap2"))
    api.wait("snapshot", snap2["id"], "available")
    # The CLI asks for the snapshot's size when --size is smaller (the API's 400 for a size
    # below the snapshot's is in tests/functional/volume/test_bad_input.py).
    grown = cloud.json("volume", "create", "--snapshot", snap2["id"], "--size", "1",
                       unique("grown"))  # fmt: skip
    assert api.wait("volume", grown["id"], "available")["size"] == 2
    cloud.openstack("volume", "delete", grown["id"])
    api.wait_gone("volume", grown["id"])

    in_use = cloud.openstack("volume", "delete", vol1, check=False)
    assert in_use.returncode != 0 and "dependent snapshots" in in_use.stderr
    cloud.openstack("volume", "snapshot", "delete", snap1, snap2["id"])
    api.wait_gone("snapshot", snap2["id"])
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
    assert "Maximum number of volumes allowed (2) exceeded" in third.stderr, third.stderr
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


def volume_file(cloud: Deployment, volume_id: str) -> Path:
    """Where the ``file`` backend keeps a raw volume."""
    return Path(cloud.extra_env["data_dir"]) / "volumes" / "file" / f"volume-{volume_id}.raw"


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            sha.update(block)
    return sha.hexdigest()


def test_backups_of_the_seed(all_in_one: Deployment) -> None:
    cloud, api = all_in_one, Api(all_in_one)
    vol1 = cloud.json("volume", "create", "--size", "1", unique("vol1"))
    api.wait("volume", vol1["id"], "available")
    path = volume_file(cloud, vol1["id"])
    with open(path, "r+b") as handle:  # what a guest would have written
        handle.seek(7 << 20)
        handle.write(os.urandom(3 << 20))
    backup1 = unique("backup1")
    created = cloud.json("volume", "backup", "create", "--name", backup1, "--force", vol1["id"])
    assert created["name"] == backup1
    api.wait("backup", created["id"], "available")
    shown = cloud.json("volume", "backup", "show", backup1)
    assert (shown["container"], shown["status"], shown["size"]) == ("volumebackups", "available", 1)
    assert shown["is_incremental"] is False and shown["has_dependent_backups"] is False
    assert shown["object_count"] > 0 and shown["volume_id"] == vol1["id"]
    full_objects = shown["object_count"]

    with open(path, "r+b") as handle:  # a small change: one chunk
        handle.seek(700 << 20)
        handle.write(b"changed" * 100)
    expected = file_digest(path)
    backup2 = unique("backup2")
    incremental = cloud.json(
        "volume", "backup", "create", "--name", backup2, "--incremental", "--force", vol1["id"]
    )
    api.wait("backup", incremental["id"], "available")
    second = cloud.json("volume", "backup", "show", backup2)
    assert second["is_incremental"] is True
    assert second["object_count"] == 2 < full_objects  # the changed chunk and the metadata
    assert cloud.json("volume", "backup", "show", backup1)["has_dependent_backups"] is True

    restored = cloud.json("volume", "backup", "restore", backup2, unique("restored"))
    assert restored["id"] == incremental["id"]
    volume = api.wait("volume", restored["volume_id"], "available")
    api.wait("backup", incremental["id"], "available")
    copy = path.with_name(f"volume-{volume['id']}.raw")
    assert file_digest(copy) == expected

    # A backup of a bigger volume does not fit the restored 1 GiB volume: 400, data kept.
    cloud.openstack("volume", "set", "--size", "2", vol1["id"])
    api.wait("volume", vol1["id"], "available")
    big = cloud.json("volume", "backup", "create", "--force", vol1["id"])
    api.wait("backup", big["id"], "available")
    onto = cloud.openstack("volume", "backup", "restore", "--force", big["id"], volume["id"],
                           check=False)  # fmt: skip
    assert onto.returncode != 0 and "too small" in onto.stderr, onto.stderr
    assert api.wait("volume", volume["id"], "available")["size"] == 1
    assert file_digest(copy) == expected
    cloud.openstack("volume", "backup", "delete", big["id"])
    api.wait_gone("backup", big["id"])

    cloud.openstack("volume", "backup", "delete", backup2)
    api.wait_gone("backup", incremental["id"])
    cloud.openstack("volume", "backup", "delete", backup1)
    cloud.openstack("volume", "delete", vol1["id"], volume["id"])


@pytest.fixture(scope="module")
def volume_apart(scale_out: Deployment) -> Iterator[tuple[Deployment, Process]]:
    """``onestack serve volume`` on PostgreSQL and RabbitMQ beside the scale-out identity, with
    a volume agent and a backup agent as processes of their own; (deployment, volume agent)."""
    root = Path(scale_out.extra_env["root"])
    password = (root / "a" / "service-password").read_text().strip()
    env = {
        "ONESTACK_IDENTITY_URL": scale_out.auth_url,
        "ONESTACK_SERVICE_PASSWORD": password,
        "ONESTACK_VOLUME__REPORT_INTERVAL": "1",
    }
    bus = ["--bus", scale_out.extra_env["bus"]]
    port = free_port()
    service = Process(
        ["serve", "volume", "--port", str(port), "--data-dir", str(root / "vol"),
         "--db", database_url("postgresql", root), *bus],
        root / "vol.out", env=env,
    )  # fmt: skip
    service.wait_listening(port)
    agents = [
        Process(
            ["agent", kind, "--host", "volnode1", "--data-dir", str(root / "volnode1"), *bus],
            root / f"{kind}-agent.out",
            env=env,
        )
        for kind in ("volume", "backup")
    ]
    yield scale_out, agents[0]
    for process in (*agents, service):
        assert process.stop() == 0, process.log.read_text()[-2000:]


def test_volume_service_and_agents_apart(volume_apart: tuple[Deployment, Process]) -> None:
    cloud, agent = volume_apart
    api = Api(cloud)
    deadline = time.monotonic() + 60
    while True:
        services = {
            (s["Binary"], s["Host"]): s["State"] for s in cloud.json("volume", "service", "list")
        }
        if services.get(("cinder-volume", "volnode1@file")) == "up":
            break
        assert time.monotonic() < deadline, services
        time.sleep(0.5)
    assert services[("cinder-backup", "volnode1")] == "up"
    volume = cloud.json("volume", "create", "--size", "1", unique("apart"))
    ready = api.wait("volume", volume["id"], "available")
    assert ready["os-vol-host-attr:host"] == "volnode1@file#file"
    snapshot = cloud.json("volume", "snapshot", "create", "--volume", volume["id"], unique("s"))
    api.wait("snapshot", snapshot["id"], "available")
    cloud.openstack("volume", "delete", "--purge", volume["id"])
    api.wait_gone("volume", volume["id"])
    # The agent stops: its heartbeats stop, and the service list says so.
    assert agent.stop() == 0
    deadline = time.monotonic() + 30
    while True:
        services = {
            (s["Binary"], s["Host"]): s["State"] for s in cloud.json("volume", "service", "list")
        }
        if services[("cinder-volume", "volnode1@file")] == "down":
            break
        assert time.monotonic() < deadline, services
        time.sleep(1)


def test_backups_of_a_bootable_volume_and_a_snapshot(
    all_in_one: Deployment, tmp_path: Path
) -> None:
    cloud, api = all_in_one, Api(all_in_one)
    disk = tmp_path / "boot.raw"
    disk.write_bytes(b"B" * (1 << 20))
    image = cloud.json("image", "create", "--file", str(disk), "--disk-format", "raw",
                       "--container-format", "bare", unique("boot-image"))  # fmt: skip
    boot = cloud.json("volume", "create", "--size", "1", "--image", image["id"], unique("boot"))
    api.wait("volume", boot["id"], "available")
    snapshot = cloud.json("volume", "snapshot", "create", "--volume", boot["id"], unique("snap"))
    api.wait("snapshot", snapshot["id"], "available")

    whole = cloud.json("volume", "backup", "create", boot["id"])
    api.wait("backup", whole["id"], "available")
    of_snapshot = cloud.json("volume", "backup", "create", "--snapshot", snapshot["id"], boot["id"])
    api.wait("backup", of_snapshot["id"], "available")
    assert (
        cloud.json("volume", "backup", "show", of_snapshot["id"])["snapshot_id"] == snapshot["id"]
    )

    restored_ids = []
    for backup_id in (whole["id"], of_snapshot["id"]):
        restored = cloud.json("volume", "backup", "restore", backup_id, unique("restored"))
        api.wait("backup", backup_id, "available")
        volume = api.wait("volume", restored["volume_id"], "available")
        shown = cloud.json("volume", "show", volume["id"])
        assert shown["bootable"] is True, shown
        assert shown["volume_image_metadata"]["image_id"] == image["id"], shown
        with open(volume_file(cloud, volume["id"]), "rb") as handle:
            assert handle.read(1 << 20) == b"B" * (1 << 20)
        restored_ids.append(volume["id"])

    for backup_id in (whole["id"], of_snapshot["id"]):
        cloud.openstack("volume", "backup", "delete", backup_id)
        api.wait_gone("backup", backup_id)
    cloud.openstack("volume", "snapshot", "delete", snapshot["id"])
    api.wait_gone("snapshot", snapshot["id"])
    cloud.openstack("volume", "delete", boot["id"], *restored_ids)
    cloud.openstack("image", "delete", image["id"])
