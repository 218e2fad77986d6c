"""Volumes attached to servers, with the real openstack CLI on a cloud of two fake hosts:
``server add volume`` (the volume in-use with its attachment, ``volumes_attached`` in
``server show``), the errors Nova gives (an in-use volume, another project's volume),
``server remove volume``, growing an attached volume, boot from volume (``--boot-from-volume``
and ``--volume``) and what server delete does with the mapped volumes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import (
    ADMIN_PASSWORD,
    Deployment,
    Process,
    free_port,
    issue_token,
)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``onestack up --fake-hosts 2`` with an image and a network, once its hosts report."""
    data_dir = tmp_path_factory.mktemp("volattach")
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD, "--fake-hosts", "2"],
        data_dir / "onestack.out",
        env={"ONESTACK_NETWORK__DRIVER": "noop"},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    process.wait_ready(auth_url)
    deployment = Deployment("fake-hosts", auth_url, [process])
    token = issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(
            f"http://127.0.0.1:{port}/compute/v2.1/os-hypervisors",
            headers={"X-Auth-Token": token},
        )
        if answer.status_code == 200 and len(answer.json()["hypervisors"]) == 2:
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    image = data_dir / "guest.img"
    image.write_bytes(b"\0" * (1 << 20))
    deployment.openstack("image", "create", "--disk-format", "raw", "--container-format",
                         "bare", "--file", str(image), "--public", "guest")  # fmt: skip
    deployment.openstack("network", "create", "intnet")
    deployment.openstack("subnet", "create", "--network", "intnet", "--subnet-range",
                         "10.6.6.0/24", "intsub")  # fmt: skip
    yield deployment
    assert process.stop() == 0, process.log.read_text()[-2000:]


class Api:
    """Plain HTTP for the polling between CLI steps (each CLI run costs a second or two)."""

    def __init__(self, cloud: Deployment, user: str = "admin", password: str = ADMIN_PASSWORD,
                 project: str = "admin"):  # fmt: skip
        answer = issue_token(cloud.auth_url, user, password, project)
        self.headers = {"X-Auth-Token": answer.headers["x-subject-token"],
                        "OpenStack-API-Version": "volume 3.67"}  # fmt: skip
        self.root = cloud.auth_url.removesuffix("/identity/v3")

    def volume(self, name: str) -> dict[str, Any] | None:
        """The volume of this name or id, or None."""
        answer = httpx.get(f"{self.root}/volume/v3/volumes/detail", headers=self.headers)
        answer.raise_for_status()
        for volume in answer.json()["volumes"]:
            if name in (volume["id"], volume["name"]):
                found: dict[str, Any] = volume
                return found
        return None

    def wait_server(self, server: str, status: str | None, timeout: float = 60) -> None:
        """Until the server has ``status`` (None: until it is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = httpx.get(f"{self.root}/compute/v2.1/servers/{server}", headers=self.headers)
            if status is None and answer.status_code == 404:
                return
            answer.raise_for_status()
            found = answer.json()["server"]["status"]
            if found == status:
                return
            assert found != "ERROR", answer.json()["server"].get("fault")
            assert time.monotonic() < deadline, f"server {server} stayed {found}"
            time.sleep(0.2)

    def events(self, server: str) -> set[str]:
        answer = httpx.get(f"{self.root}/compute/v2.1/servers/{server}/os-instance-actions",
                           headers=self.headers)  # fmt: skip
        answer.raise_for_status()
        return {action["action"] for action in answer.json()["instanceActions"]}


def wait_volume(cloud: Deployment, name: str, status: str, timeout: float = 60,
                api: Api | None = None) -> dict[str, Any]:  # fmt: skip
    """Poll until the volume has ``status``; then show it with the CLI."""
    api = api or Api(cloud)
    deadline = time.monotonic() + timeout
    while True:
        volume = api.volume(name)
        assert volume is not None, f"no volume {name}"
        if volume["status"] == status:
            break
        assert not volume["status"].startswith("error"), volume
        assert time.monotonic() < deadline, f"{name} stayed {volume['status']}, not {status}"
        time.sleep(0.2)
    shown: dict[str, Any] = cloud.json("volume", "show", volume["id"])
    assert shown["status"] == status
    return shown


def wait_gone(cloud: Deployment, name: str, timeout: float = 60) -> None:
    api = Api(cloud)
    deadline = time.monotonic() + timeout
    while api.volume(name) is not None:
        assert time.monotonic() < deadline, f"volume {name} was not deleted"
        time.sleep(0.2)
    assert cloud.openstack("volume", "show", name, check=False).returncode != 0


def attached_ids(cloud: Deployment, server: str) -> list[str]:
    shown = cloud.json("server", "show", server)
    return [entry["id"] for entry in shown["volumes_attached"]]


def boot(cloud: Deployment, name: str, *options: str) -> dict[str, Any]:
    """``server create`` (polled over HTTP rather than the CLI's 5 s ``--wait``), then shown."""
    created = cloud.json("server", "create", "--flavor", "1", "--network", "intnet",
                         *options, name)  # fmt: skip
    Api(cloud).wait_server(created["id"], "ACTIVE")
    server: dict[str, Any] = cloud.json("server", "show", name)
    assert server["status"] == "ACTIVE", server
    return server


def delete(cloud: Deployment, name: str) -> None:
    """``server delete``, polled until the server is gone."""
    server_id = cloud.json("server", "show", name)["id"]
    cloud.openstack("server", "delete", name)
    Api(cloud).wait_server(server_id, None)


def test_attach_and_detach(cloud: Deployment) -> None:
    cloud.openstack("volume", "create", "--size", "1", "vol1")
    vol1 = wait_volume(cloud, "vol1", "available")
    server = boot(cloud, "inst1", "--image", "guest")
    inst2 = boot(cloud, "inst2", "--image", "guest")

    cloud.openstack("server", "add", "volume", "inst1", "vol1")
    volume = wait_volume(cloud, "vol1", "in-use")
    (attachment,) = volume["attachments"]
    assert attachment["server_id"] == server["id"]
    assert attachment["device"] == "/dev/vdb"
    assert attached_ids(cloud, "inst1") == [vol1["id"]]
    (listed,) = cloud.json("server", "volume", "list", "inst1")
    assert listed["Volume ID"] == vol1["id"] and listed["Device"] == "/dev/vdb"

    # A volume that is not multiattach is attached to one server at a time.
    taken = cloud.openstack("server", "add", "volume", "inst2", "vol1", check=False)
    assert taken.returncode != 0 and "Invalid volume" in taken.stderr, taken.stderr
    again = cloud.openstack("server", "add", "volume", "inst1", "vol1", check=False)
    assert again.returncode != 0 and "already attached" in again.stderr, again.stderr

    # Growing an attached volume: block storage tells compute, the volume stays in use.
    cloud.openstack("volume", "set", "--size", "2", "vol1")
    api = Api(cloud)
    deadline = time.monotonic() + 60
    while (api.volume("vol1") or {}).get("size") != 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    wait_volume(cloud, "vol1", "in-use")
    deadline = time.monotonic() + 30
    while "volume-extended" not in api.events(server["id"]):
        assert time.monotonic() < deadline, "compute was not told of the new size"
        time.sleep(0.2)

    cloud.openstack("server", "remove", "volume", "inst1", "vol1")
    volume = wait_volume(cloud, "vol1", "available")
    assert volume["attachments"] == []
    assert attached_ids(cloud, "inst1") == []
    missing = cloud.openstack("server", "remove", "volume", "inst1", "vol1", check=False)
    assert missing.returncode != 0 and "404" in missing.stderr, missing.stderr

    # Now free, it goes to the other server.
    cloud.openstack("server", "add", "volume", "inst2", "vol1")
    wait_volume(cloud, "vol1", "in-use")
    assert attached_ids(cloud, "inst2") == [vol1["id"]]

    # A multiattach volume (its type says so) goes to both servers.
    cloud.openstack("volume", "type", "create", "--property", "multiattach=<is> True", "multi")
    cloud.openstack("volume", "create", "--size", "1", "--type", "multi", "shared")
    wait_volume(cloud, "shared", "available")
    cloud.openstack("server", "add", "volume", "inst1", "shared")
    wait_volume(cloud, "shared", "in-use")
    cloud.openstack("server", "add", "volume", "inst2", "shared")
    api = Api(cloud)
    deadline = time.monotonic() + 30
    while len((api.volume("shared") or {}).get("attachments", [])) < 2:
        assert time.monotonic() < deadline, api.volume("shared")
        time.sleep(0.2)
    shared = wait_volume(cloud, "shared", "in-use")
    assert {a["server_id"] for a in shared["attachments"]} == {server["id"], inst2["id"]}

    # Deleting the server detaches its volumes and keeps them (not delete_on_termination).
    delete(cloud, "inst2")
    assert wait_volume(cloud, "vol1", "available")["attachments"] == []
    (left,) = wait_volume(cloud, "shared", "in-use")["attachments"]
    assert left["server_id"] == server["id"]
    cloud.openstack("server", "remove", "volume", "inst1", "shared")
    wait_volume(cloud, "shared", "available")


def test_other_projects_volume_is_not_found(cloud: Deployment) -> None:
    cloud.openstack("project", "create", "other")
    cloud.openstack("user", "create", "--project", "other", "--password", "secret", "bob")
    cloud.openstack("role", "add", "--user", "bob", "--project", "other", "member")
    bob = cloud.env_for("bob", "secret", "other")
    cloud.openstack("volume", "create", "--size", "1", "bobvol", env=bob)
    bob_volume = wait_volume_as(cloud, "bobvol", bob)
    boot(cloud, "inst3", "--image", "guest")
    denied = cloud.openstack("server", "add", "volume", "inst3", bob_volume, check=False)
    assert denied.returncode != 0 and "could not be found" in denied.stderr, denied.stderr
    assert attached_ids(cloud, "inst3") == []
    delete(cloud, "inst3")


def wait_volume_as(cloud: Deployment, name: str, env: dict[str, str]) -> str:
    api = Api(cloud, env["OS_USERNAME"], env["OS_PASSWORD"], env["OS_PROJECT_NAME"])
    deadline = time.monotonic() + 60
    while (volume := api.volume(name)) is None or volume["status"] != "available":
        assert time.monotonic() < deadline, volume
        time.sleep(0.2)
    return str(volume["id"])


def test_boot_from_volume(cloud: Deployment) -> None:
    server = boot(cloud, "bfv1", "--image", "guest", "--boot-from-volume", "1")
    (root_id,) = attached_ids(cloud, "bfv1")
    root = wait_volume(cloud, root_id, "in-use")
    assert root["size"] == 1 and root["bootable"] in (True, "true")
    assert root["attachments"][0]["server_id"] == server["id"]
    assert root["attachments"][0]["device"] == "/dev/vda"
    assert server["image"] in ("", "N/A (booted from volume)"), server["image"]
    root_detach = cloud.openstack("server", "remove", "volume", "bfv1", root_id, check=False)
    assert root_detach.returncode != 0 and "root device" in root_detach.stderr

    # Not delete_on_termination: the volume outlives the server, then boots another.
    delete(cloud, "bfv1")
    wait_volume(cloud, root_id, "available")
    boot(cloud, "bfv2", "--volume", root_id)
    wait_volume(cloud, root_id, "in-use")
    assert attached_ids(cloud, "bfv2") == [root_id]
    delete(cloud, "bfv2")
    wait_volume(cloud, root_id, "available")
    cloud.openstack("volume", "delete", root_id)

    # Mapped with delete_on_termination, the volume goes with the server.
    boot(cloud, "bfv3", "--image", "guest", "--boot-from-volume", "1", "--delete-on-termination")
    (doomed,) = attached_ids(cloud, "bfv3")
    wait_volume(cloud, doomed, "in-use")
    delete(cloud, "bfv3")
    wait_gone(cloud, doomed)


def test_image_of_a_volume_backed_server(cloud: Deployment) -> None:
    source = boot(cloud, "bfvsrc", "--image", "guest", "--boot-from-volume", "1")
    (source_root,) = attached_ids(cloud, "bfvsrc")
    image = cloud.json("server", "image", "create", "--name", "bfvimg", "--wait", "bfvsrc")
    assert (image["status"], image["size"]) == ("active", 0), image
    shown = cloud.json("image", "show", "bfvimg")
    properties = shown["properties"]
    assert (properties["bdm_v2"], properties["root_device_name"]) == ("True", "/dev/vda")
    (mapping,) = json.loads(properties["block_device_mapping"])
    assert (mapping["source_type"], mapping["boot_index"], mapping["volume_size"]) == (
        "snapshot", 0, 1)  # fmt: skip
    # The root volume was snapshotted in place (forced: it is in use) and stays attached.
    snapshot = cloud.json("volume", "snapshot", "show", mapping["snapshot_id"])
    assert (snapshot["volume_id"], snapshot["status"]) == (source_root, "available")
    wait_volume(cloud, source_root, "in-use")
    assert source["id"] in {a["server_id"] for a in cloud.json("volume", "show", source_root)[
        "attachments"]}  # fmt: skip

    # A server booted from the image gets a new root volume made from the snapshot.
    clone = boot(cloud, "bfvclone", "--image", "bfvimg")
    (clone_root,) = attached_ids(cloud, "bfvclone")
    root = wait_volume(cloud, clone_root, "in-use")
    assert clone_root != source_root and root["snapshot_id"] == mapping["snapshot_id"]
    assert root["attachments"][0]["server_id"] == clone["id"]
    assert root["attachments"][0]["device"] == "/dev/vda"
    # So does one asked for as --boot-from-volume with that image.
    boot(cloud, "bfvclone2", "--image", "bfvimg", "--boot-from-volume", "1")
    (second_root,) = attached_ids(cloud, "bfvclone2")
    assert wait_volume(cloud, second_root, "in-use")["snapshot_id"] == mapping["snapshot_id"]

    # Deleting the image keeps the snapshot, as Nova does.
    cloud.openstack("image", "delete", "bfvimg")
    assert cloud.openstack("image", "show", "bfvimg", check=False).returncode != 0
    assert cloud.json("volume", "snapshot", "show", mapping["snapshot_id"])["status"] == "available"

    for name in ("bfvclone", "bfvclone2", "bfvsrc"):
        delete(cloud, name)
    for volume in (clone_root, second_root):
        wait_volume(cloud, volume, "available")
        cloud.openstack("volume", "delete", volume)
    cloud.openstack("volume", "snapshot", "delete", mapping["snapshot_id"])
    wait_volume(cloud, source_root, "available")
    deadline = time.monotonic() + 60
    while cloud.openstack("volume", "delete", source_root, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the snapshot kept its volume"
        time.sleep(0.5)
    wait_gone(cloud, source_root)
