"""An attached volume moved to another backend with the real openstack CLI, on a cloud
of one fake compute host and two file backends: ``volume migrate --host`` and
``volume set --type --retype-policy on-demand``; afterwards the volume keeps its id and
its attachment and lives on the new backend, with the new type."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.conftest import ADMIN_PASSWORD, Deployment, Process, free_port, issue_token


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``onestack up --fake-hosts 1`` with backends ``file`` and ``file2``, and a server."""
    data_dir = tmp_path_factory.mktemp("volmigrate")
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD, "--fake-hosts", "1"],
        data_dir / "onestack.out",
        env={"ONESTACK_NETWORK__DRIVER": "noop",
             "ONESTACK_VOLUME__BACKENDS": '[{"name": "file"}, {"name": "file2"}]'},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    process.wait_ready(auth_url)
    deployment = Deployment("fake-host", auth_url, [process])
    token = issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"http://127.0.0.1:{port}/compute/v2.1/os-hypervisors",
                           headers={"X-Auth-Token": token})  # fmt: skip
        if answer.status_code == 200 and len(answer.json()["hypervisors"]) == 1:
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    image = data_dir / "guest.img"
    image.write_bytes(b"\0" * (1 << 20))
    deployment.openstack("image", "create", "--disk-format", "raw", "--container-format",
                         "bare", "--file", str(image), "--public", "guest")  # fmt: skip
    for backend in ("file", "file2"):
        deployment.openstack("volume", "type", "create", "--property",
                             f"volume_backend_name={backend}", f"on-{backend}")  # fmt: skip
    deployment.openstack("server", "create", "--image", "guest", "--flavor", "1",
                         "--nic", "none", "--wait", "s1")  # fmt: skip
    yield deployment
    assert process.stop() == 0, process.log.read_text()[-2000:]


def settled(cloud: Deployment, name: str) -> dict[str, object]:
    """``volume show`` once the volume's migration ended."""
    deadline = time.monotonic() + 60
    while True:
        shown: dict[str, object] = cloud.json("volume", "show", name)
        if shown["os-vol-mig-status-attr:migstat"] in ("success", "error"):
            return shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)


def attached(cloud: Deployment, name: str, volume_type: str | None = None) -> dict[str, object]:
    typed = ["--type", volume_type] if volume_type else []
    cloud.openstack("volume", "create", "--size", "1", *typed, name)
    cloud.openstack("server", "add", "volume", "s1", name)
    deadline = time.monotonic() + 30
    while (shown := cloud.json("volume", "show", name))["status"] != "in-use":
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    return shown


def check_moved(cloud: Deployment, before: dict[str, object], after: dict[str, object],
                backend: str) -> None:  # fmt: skip
    assert after["id"] == before["id"] and after["status"] == "in-use"
    assert after["os-vol-mig-status-attr:migstat"] == "success"
    assert str(after["os-vol-host-attr:host"]).split("#")[0].endswith(f"@{backend}")
    server = cloud.json("server", "show", "s1")
    assert before["id"] in str(server["volumes_attached"])


def test_volume_migrate_in_use(cloud: Deployment) -> None:
    before = attached(cloud, "mig1")
    machine, _, backend = str(before["os-vol-host-attr:host"]).split("#")[0].partition("@")
    other = "file" if backend == "file2" else "file2"
    cloud.openstack("volume", "migrate", "--host", f"{machine}@{other}", "mig1")
    check_moved(cloud, before, settled(cloud, "mig1"), other)


def test_volume_retype_in_use_on_demand(cloud: Deployment) -> None:
    before = attached(cloud, "mig2", "on-file")
    cloud.openstack("volume", "set", "--type", "on-file2", "--retype-policy", "on-demand", "mig2")
    after = settled(cloud, "mig2")
    check_moved(cloud, before, after, "file2")
    assert after["type"] == "on-file2"
