"""The seed's compute sequence with the real openstack CLI, on a cloud of three fake hosts:
flavors, key pairs, a server booted on a network and shown as the seed shows it, services
and hypervisors, a snapshot, resize and cold migration with confirm, server events,
usage, power actions in the wrong state, and the instance quota."""

from __future__ import annotations

import contextlib
import re
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
)

SEED_FLAVORS = [
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 20, 1),
    ("3", "m1.medium", 4096, 40, 2),
    ("4", "m1.large", 8192, 80, 4),
    ("5", "m1.xlarge", 16384, 160, 8),
]


@contextlib.contextmanager
def fake_hosts_cloud(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Deployment]:
    """``onestack up --fake-hosts 3`` with an image and a network, once its hosts report
    (``env``: more settings, e.g. ``ONESTACK_COMPUTE__...``)."""
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD, "--fake-hosts", "3"],
        data_dir / "onestack.out",
        env={"ONESTACK_NETWORK__DRIVER": "noop", **(env or {})},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    process.wait_ready(auth_url)
    cloud = Deployment("fake-hosts", auth_url, [process])
    cloud.extra_env = {"data_dir": str(data_dir)}
    token = issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(
            f"http://127.0.0.1:{port}/compute/v2.1/os-hypervisors",
            headers={"X-Auth-Token": token},
        )
        if answer.status_code == 200 and len(answer.json()["hypervisors"]) == 3:
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    image = data_dir / "cirros6.img"
    image.write_bytes(b"\0" * (1 << 20))
    cloud.openstack("image", "create", "--disk-format", "raw", "--container-format", "bare",
                    "--file", str(image), "--public", "cirros6")  # fmt: skip
    cloud.openstack("network", "create", "intnet")
    cloud.openstack("subnet", "create", "--network", "intnet", "--subnet-range", "10.5.5.0/24",
                    "intsub")  # fmt: skip
    yield cloud
    assert process.stop() == 0, process.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with fake_hosts_cloud(tmp_path_factory.mktemp("compute")) as cloud:
        yield cloud


def show(cloud: Deployment, server: str) -> dict[str, Any]:
    found: dict[str, Any] = cloud.json("server", "show", server)
    return found


def test_seed_compute_sequence(nova: Deployment, tmp_path: Path) -> None:
    cloud = nova
    flavors = {row["ID"]: row for row in cloud.json("flavor", "list")}
    for flavor_id, name, ram, disk, vcpus in SEED_FLAVORS:
        row = flavors[flavor_id]
        assert (row["Name"], row["RAM"], row["Disk"], row["VCPUs"]) == (name, ram, disk, vcpus)
        assert row["Ephemeral"] == 0 and row["Is Public"] is True
    tinier = cloud.json(
        "flavor", "create", "--id", "10", "--ram", "256", "--disk", "2", "--public", "m1.tinier"
    )
    assert (tinier["id"], tinier["ram"], tinier["disk"], tinier["vcpus"]) == ("10", 256, 2, 1)
    assert tinier["os-flavor-access:is_public"] is True
    duplicate = cloud.openstack("flavor", "create", "--id", "10", "--ram", "1", "--disk", "1",
                                "other", check=False)  # fmt: skip
    assert duplicate.returncode != 0 and "already exists" in duplicate.stderr

    key = cloud.openstack("keypair", "create", "mykeypair").stdout
    assert "PRIVATE KEY-----" in key
    (tmp_path / "mykeypair.key").write_text(key)
    assert cloud.json("keypair", "show", "mykeypair")["name"] == "mykeypair"

    net_id = cloud.json("network", "show", "intnet")["id"]
    cloud.openstack("server", "create", "--image", "cirros6", "--key-name", "mykeypair",
                    "--flavor", "10", "--nic", f"net-id={net_id}", "--wait",
                    "instance01")  # fmt: skip
    server = show(cloud, "instance01")
    assert server["status"] == "ACTIVE"
    assert server["OS-EXT-AZ:availability_zone"] == "nova"
    host = server["OS-EXT-SRV-ATTR:host"]
    assert host in ("host1", "host2", "host3")
    assert server["OS-EXT-SRV-ATTR:hypervisor_hostname"] == host
    assert re.fullmatch(r"instance-[0-9a-f]{8}", server["OS-EXT-SRV-ATTR:instance_name"])
    assert server["OS-EXT-STS:power_state"] == 1  # Running
    assert server["OS-EXT-STS:task_state"] is None
    assert server["OS-EXT-STS:vm_state"] == "active"
    assert server["OS-SRV-USG:launched_at"] and server["OS-SRV-USG:terminated_at"] is None
    assert re.fullmatch(r"10\.5\.5\.\d+", server["addresses"]["intnet"][0])
    assert server["key_name"] == "mykeypair"
    assert "cirros6" in str(server["image"])
    assert "m1.tinier" in str(server["flavor"])
    assert len(server["hostId"]) == 56
    ports = cloud.json("port", "list", "--server", server["id"])
    assert len(ports) == 1

    services = cloud.json("compute", "service", "list")
    computes = {s["Host"]: s for s in services if s["Binary"] == "nova-compute"}
    assert set(computes) == {"host1", "host2", "host3"}
    assert all(s["State"] == "up" and s["Status"] == "enabled" for s in computes.values())
    assert {"nova-conductor", "nova-scheduler"} <= {s["Binary"] for s in services}
    hypervisors = cloud.json("hypervisor", "list")
    assert {h["Hypervisor Hostname"] for h in hypervisors} == {"host1", "host2", "host3"}

    cloud.openstack("server", "image", "create", "--name", "snap1", "instance01")
    deadline = time.monotonic() + 30
    while cloud.json("image", "show", "snap1")["status"] != "active":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    images = {row["Name"]: row for row in cloud.json("image", "list")}
    assert images["snap1"]["Status"] == "active"
    snap = cloud.json("image", "show", "snap1")
    assert snap["properties"]["instance_uuid"] == server["id"]

    cloud.openstack("server", "resize", "--flavor", "m1.small", "instance01")
    resized = wait_status(cloud, "instance01", "VERIFY_RESIZE")
    assert resized["OS-EXT-SRV-ATTR:host"] != host
    cloud.openstack("server", "resize", "confirm", "instance01")
    confirmed = wait_status(cloud, "instance01", "ACTIVE")
    assert "m1.small" in str(confirmed["flavor"])
    moved_to = confirmed["OS-EXT-SRV-ATTR:host"]

    cloud.openstack("server", "migrate", "instance01")
    migrated = wait_status(cloud, "instance01", "VERIFY_RESIZE")
    assert migrated["OS-EXT-SRV-ATTR:host"] not in (moved_to,)
    cloud.openstack("server", "resize", "confirm", "instance01")
    wait_status(cloud, "instance01", "ACTIVE")
    migrations = cloud.json("server", "migration", "list", "--server", "instance01")
    assert {m["Type"] for m in migrations} == {"resize", "migration"}
    assert {m["Status"] for m in migrations} == {"confirmed"}

    events = cloud.json("server", "event", "list", "instance01")
    actions = {event["Action"] for event in events}
    assert {"create", "createImage", "resize", "confirmResize", "migrate"} <= actions
    usage = cloud.json("usage", "list")
    assert any(server["id"] in str(row["Servers"]) for row in usage), usage


def wait_status(cloud: Deployment, server: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = show(cloud, server)
        if found["status"] == status:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def test_power_actions_and_wrong_state(nova: Deployment) -> None:
    cloud = nova
    net_id = cloud.json("network", "show", "intnet")["id"]
    cloud.openstack("server", "create", "--image", "cirros6", "--flavor", "m1.tiny",
                    "--nic", f"net-id={net_id}", "--wait", "powered")  # fmt: skip
    cloud.openstack("server", "stop", "powered")
    wait_status(cloud, "powered", "SHUTOFF")
    again = cloud.openstack("server", "stop", "powered", check=False)
    assert again.returncode != 0 and "vm_state stopped" in again.stderr
    cloud.openstack("server", "start", "powered")
    wait_status(cloud, "powered", "ACTIVE")
    cloud.openstack("server", "reboot", "--hard", "--wait", "powered")
    assert "fake console" in cloud.openstack("console", "log", "show", "powered").stdout
    url = cloud.json("console", "url", "show", "--novnc", "powered")["url"]
    assert "/compute/novnc/" in url
    cloud.openstack("server", "delete", "--wait", "powered")
    gone = cloud.openstack("server", "show", "powered", check=False)
    assert gone.returncode != 0


def test_quota_set_instances_then_third_boot_fails(nova: Deployment) -> None:
    cloud = nova
    project = "quota-project"
    cloud.openstack("project", "create", project)
    cloud.openstack("role", "add", "--user", "admin", "--project", project, "admin")
    env = cloud.env_for(project=project)
    cloud.openstack("quota", "set", "--instances", "2", project)
    net_id = cloud.json("network", "show", "intnet")["id"]
    for name in ("q1", "q2"):
        cloud.openstack("server", "create", "--image", "cirros6", "--flavor", "m1.tiny",
                        "--nic", f"net-id={net_id}", "--wait", name, env=env)  # fmt: skip
    third = cloud.openstack("server", "create", "--image", "cirros6", "--flavor", "m1.tiny",
                            "--nic", f"net-id={net_id}", "q3", env=env, check=False)  # fmt: skip
    assert third.returncode != 0
    assert "Quota exceeded for instances" in third.stderr


def test_compute_agent_as_its_own_process_over_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``onestack agent compute --host ext1 --driver fake`` beside a cloud on RabbitMQ: the
    host reports itself and a server lands on it."""
    from tests.backends import isolated_amqp_url

    bus = isolated_amqp_url()
    data_dir = tmp_path_factory.mktemp("compute-amqp")
    port = free_port()
    env = {"ONESTACK_NETWORK__DRIVER": "noop"}
    cloud_process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir / "cloud"),
         "--admin-password", ADMIN_PASSWORD, "--bus", bus],
        data_dir / "cloud.out", env=env,
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    processes = [cloud_process]
    try:
        cloud_process.wait_ready(auth_url)
        password = (data_dir / "cloud" / "service-password").read_text().strip()
        agent = Process(
            ["agent", "compute", "--host", "ext1", "--driver", "fake", "--bus", bus,
             "--data-dir", str(data_dir / "agent")],
            data_dir / "agent.out",
            env={"ONESTACK_IDENTITY_URL": auth_url, "ONESTACK_SERVICE_PASSWORD": password},
        )  # fmt: skip
        processes.append(agent)
        cloud = Deployment("amqp", auth_url, processes)
        deadline = time.monotonic() + 60
        while not any(h["Hypervisor Hostname"] == "ext1"
                      for h in cloud.json("hypervisor", "list")):  # fmt: skip
            assert time.monotonic() < deadline, agent.log.read_text()[-2000:]
            time.sleep(0.5)
        image = data_dir / "img"
        image.write_bytes(b"\0" * 4096)
        cloud.openstack("image", "create", "--disk-format", "raw", "--container-format", "bare",
                        "--file", str(image), "img")  # fmt: skip
        cloud.openstack("network", "create", "net")
        cloud.openstack("subnet", "create", "--network", "net", "--subnet-range",
                        "10.7.0.0/24", "sub")  # fmt: skip
        net_id = cloud.json("network", "show", "net")["id"]
        cloud.openstack("server", "create", "--image", "img", "--flavor", "m1.tiny",
                        "--nic", f"net-id={net_id}", "--wait", "remote")  # fmt: skip
        server = show(cloud, "remote")
        assert server["status"] == "ACTIVE"
        assert server["OS-EXT-SRV-ATTR:host"] == "ext1"
    finally:
        for process in reversed(processes):
            assert process.stop() == 0, process.log.read_text()[-2000:]
