"""Compute admin acceptance with the real openstack CLI, on a cloud of three fake hosts:
aggregates and zones steering the scheduler, server groups, services, hypervisors,
quotas, usage."""

from __future__ import annotations

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
    unique,
)


@pytest.fixture(scope="module")
def fake_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """``onestack up --fake-hosts 3``, waited for until the three hypervisors report."""
    data_dir = tmp_path_factory.mktemp("compute-admin")
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD, "--fake-hosts", "3"],
        data_dir / "onestack.out",
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    process.wait_ready(auth_url)
    cloud = Deployment("fake-hosts", auth_url, [process])
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
    yield cloud
    assert process.stop() == 0, process.log.read_text()[-2000:]


def rows(table: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in table}


def test_aggregates_and_zones(fake_hosts: Deployment) -> None:
    cloud = fake_hosts
    name = unique("agg")
    created = cloud.json("aggregate", "create", "--property", "SSD=true", name)
    assert created["name"] == name
    cloud.openstack("aggregate", "add", "host", name, "host1")
    shown = cloud.json("aggregate", "show", name)
    assert shown["hosts"] == ["host1"]
    assert shown["properties"] == {"SSD": "true"}
    zoned = unique("zagg")
    cloud.json("aggregate", "create", "--zone", "myzone", zoned)
    cloud.openstack("aggregate", "add", "host", zoned, "host2")
    zones = cloud.json("availability", "zone", "list", "--compute")
    assert {"myzone", "nova"} <= {zone["Zone Name"] for zone in zones}
    # A host in at most one zone: host2 cannot join another zone.
    other = unique("zagg")
    cloud.json("aggregate", "create", "--zone", "otherzone", other)
    refused = cloud.openstack("aggregate", "add", "host", other, "host2", check=False)
    assert refused.returncode != 0 and "availability zone" in refused.stderr
    cloud.openstack("aggregate", "delete", other)
    listed = rows(cloud.json("aggregate", "list"), "Name")
    assert listed[zoned]["Availability Zone"] == "myzone"


def test_services_and_hypervisors(fake_hosts: Deployment) -> None:
    cloud = fake_hosts
    services = cloud.json("compute", "service", "list")
    computes = {s["Host"]: s for s in services if s["Binary"] == "nova-compute"}
    assert sorted(computes) == ["host1", "host2", "host3"]
    assert all(s["State"] == "up" and s["Status"] == "enabled" for s in computes.values())
    cloud.openstack(
        "compute", "service", "set", "--disable", "--disable-reason", "maintenance",
        "host3", "nova-compute",
    )  # fmt: skip
    after = cloud.json("compute", "service", "list", "--long", "--service", "nova-compute")
    host3 = next(s for s in after if s["Host"] == "host3")
    assert host3["Status"] == "disabled" and host3["Disabled Reason"] == "maintenance"
    cloud.openstack("compute", "service", "set", "--enable", "host3", "nova-compute")
    hypervisors = cloud.json("hypervisor", "list")
    assert sorted(h["Hypervisor Hostname"] for h in hypervisors) == ["host1", "host2", "host3"]
    shown = cloud.json("hypervisor", "show", "host1")
    assert shown["hypervisor_hostname"] == "host1" and shown["state"] == "up"
    stats = cloud.json("hypervisor", "stats", "show")
    assert stats["count"] == 3 and stats["vcpus"] > 0


def test_quotas_usage_and_server_groups(fake_hosts: Deployment) -> None:
    cloud = fake_hosts
    quota = cloud.json("quota", "show", "--compute", "admin")
    assert rows(quota, "Resource")["instances"]["Limit"] == 10
    cloud.openstack("quota", "set", "--instances", "20", "--cores", "40", "admin")
    quota = rows(cloud.json("quota", "show", "--compute", "admin"), "Resource")
    assert quota["instances"]["Limit"] == 20 and quota["cores"]["Limit"] == 40
    assert isinstance(cloud.json("usage", "list"), list)
    group = cloud.json("server", "group", "create", "--policy", "anti-affinity", unique("grp"))
    assert group["policy"] == "anti-affinity"
    shown = cloud.json("server", "group", "show", group["id"])
    assert shown["members"] == []
    cloud.openstack("server", "group", "delete", group["id"])
    limits = rows(cloud.json("limits", "show", "--absolute"), "Name")
    assert limits["instances"]["Value"] == 20


def host_of(cloud: Deployment, server: str) -> str:
    shown = cloud.json("server", "show", server)
    host: str = shown["OS-EXT-SRV-ATTR:host"]
    return host


def test_scheduling_follows_aggregates_zones_and_groups(
    fake_hosts: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cloud = fake_hosts
    disk = tmp_path_factory.mktemp("image") / "disk.raw"
    disk.write_bytes(b"\0" * (1 << 20))
    image = unique("img")
    cloud.json(
        "image", "create", "--disk-format", "raw", "--container-format", "bare",
        "--file", str(disk), image,
    )  # fmt: skip
    boot = ["server", "create", "--image", image, "--nic", "none", "--wait"]

    # Flavor extra specs matched against aggregate metadata.
    ssd = unique("ssd")
    cloud.json("aggregate", "create", "--property", "SSD=true", ssd)
    cloud.openstack("aggregate", "add", "host", ssd, "host1")
    cloud.openstack("flavor", "set", "--property", "aggregate_instance_extra_specs:SSD=true",
                    "m1.large")  # fmt: skip
    try:
        fast = unique("fast")
        cloud.json(*boot, "--flavor", "m1.large", fast)
        assert host_of(cloud, fast) == "host1"
    finally:
        cloud.openstack("flavor", "unset", "--property", "aggregate_instance_extra_specs:SSD",
                        "m1.large")  # fmt: skip

    # A zone made by an aggregate.
    zone = unique("zone")
    zoned = unique("zagg")
    cloud.json("aggregate", "create", "--zone", zone, zoned)
    cloud.openstack("aggregate", "add", "host", zoned, "host3")
    placed = unique("zoned")
    server = cloud.json(*boot, "--flavor", "m1.tiny", "--availability-zone", zone, placed)
    assert server["OS-EXT-AZ:availability_zone"] == zone
    assert host_of(cloud, placed) == "host3"

    # Anti-affinity: three members on three hosts, a fourth has nowhere to go.
    group = cloud.json("server", "group", "create", "--policy", "anti-affinity", unique("grp"))
    members = [unique("member") for _ in range(3)]
    for name in members:
        cloud.json(*boot, "--flavor", "m1.tiny", "--hint", f"group={group['id']}", name)
    assert sorted(host_of(cloud, name) for name in members) == ["host1", "host2", "host3"]
    fourth = unique("member")
    failed = cloud.openstack(
        *boot, "--flavor", "m1.tiny", "--hint", f"group={group['id']}", fourth, check=False
    )
    assert failed.returncode != 0
    shown = cloud.json("server", "show", fourth)
    assert shown["status"] == "ERROR"
    assert "No valid host was found" in str(shown["fault"])
    assert len(cloud.json("server", "group", "show", group["id"])["members"]) >= 3

    usage = rows(cloud.json("usage", "list"), "Project")
    assert usage, "usage list shows the admin project's servers"
