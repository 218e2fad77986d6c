"""A server's ports, networks, security groups, floating addresses, soft delete, restore,
diagnostics and password with the real openstack CLI, on three fake hosts with
``reclaim_instance_interval`` set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import Deployment
from tests.acceptance.test_compute_cli import fake_hosts_cloud, show, wait_status


@pytest.fixture(scope="module")
def soft_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    env = {"ONESTACK_COMPUTE__RECLAIM_INSTANCE_INTERVAL": "3600"}
    with fake_hosts_cloud(tmp_path_factory.mktemp("servercli"), env) as cloud:
        yield cloud


def boot(cloud: Deployment, name: str) -> str:
    created = cloud.json("server", "create", "--flavor", "m1.tiny", "--image", "cirros6",
                         "--network", "intnet", "--wait", name)  # fmt: skip
    assert created["status"] == "ACTIVE", created
    server_id: str = created["id"]
    return server_id


def refused(cloud: Deployment, *args: str) -> str:
    """The error output of a CLI command that must fail."""
    done = cloud.openstack(*args, check=False)
    assert done.returncode != 0, done.stdout
    return done.stderr + done.stdout


def test_ports_networks_security_groups_and_floating_ips(soft_cloud: Deployment) -> None:
    cloud = soft_cloud
    server_id = boot(cloud, "nics")
    cloud.openstack("network", "create", "extra")
    cloud.openstack("subnet", "create", "--network", "extra", "--subnet-range", "10.6.6.0/24",
                    "extrasub")  # fmt: skip

    cloud.openstack("server", "add", "network", "nics", "extra")
    assert set(show(cloud, "nics")["addresses"]) == {"intnet", "extra"}
    cloud.openstack("server", "remove", "network", "nics", "extra")
    assert set(show(cloud, "nics")["addresses"]) == {"intnet"}
    assert cloud.json("port", "list", "--network", "extra") == []  # compute's port is gone

    cloud.openstack("port", "create", "--network", "intnet", "userport")
    cloud.openstack("server", "add", "port", "nics", "userport")
    port = cloud.json("port", "show", "userport")
    assert port["device_id"] == server_id and port["device_owner"].startswith("compute:")
    assert len(show(cloud, "nics")["addresses"]["intnet"]) == 2
    cloud.openstack("server", "remove", "port", "nics", "userport")
    assert cloud.json("port", "show", "userport")["device_id"] == ""

    group = cloud.json("security", "group", "create", "web")
    cloud.openstack("server", "add", "security", "group", "nics", "web")
    assert {"name": "web"} in show(cloud, "nics")["security_groups"]
    (server_port,) = cloud.json("port", "list", "--server", server_id)
    assert group["id"] in cloud.json("port", "show", server_port["ID"])["security_group_ids"]
    assert "already associated" in refused(cloud, "server", "add", "security", "group", "nics",
                                           "web")  # fmt: skip
    assert "not found" in refused(cloud, "server", "add", "security", "group", "nics", "nope")
    cloud.openstack("server", "remove", "security", "group", "nics", "web")
    assert group["id"] not in cloud.json("port", "show", server_port["ID"])["security_group_ids"]

    cloud.openstack("network", "create", "--external", "public")
    cloud.openstack("subnet", "create", "--network", "public", "--subnet-range",
                    "172.24.7.0/24", "publicsub")  # fmt: skip
    cloud.openstack("router", "create", "r1")
    cloud.openstack("router", "set", "--external-gateway", "public", "r1")
    cloud.openstack("router", "add", "subnet", "r1", "intsub")
    address = cloud.json("floating", "ip", "create", "public")["floating_ip_address"]
    cloud.openstack("server", "add", "floating", "ip", "nics", address)
    assert address in [a for a in show(cloud, "nics")["addresses"]["intnet"]]
    (row,) = [r for r in cloud.json("server", "list") if r["ID"] == server_id]
    assert address in str(row["Networks"]), row
    cloud.openstack("server", "delete", "--force", "--wait", server_id)


def test_soft_delete_restore_diagnostics_and_password(soft_cloud: Deployment) -> None:
    cloud = soft_cloud
    server_id = boot(cloud, "soft")
    diagnostics = cloud.json("server", "show", "--diagnostics", "soft")
    assert diagnostics["driver"] == "fake" and diagnostics["num_cpus"] == 1, diagnostics
    cloud.openstack("server", "set", "--password", "n3w-secret", "soft")

    cloud.openstack("server", "delete", "soft")
    assert wait_status(cloud, server_id, "SOFT_DELETED")["OS-EXT-STS:power_state"] == 4
    assert server_id not in [r["ID"] for r in cloud.json("server", "list")]
    assert "409" in refused(cloud, "server", "set", "--password", "x", server_id)
    cloud.openstack("server", "restore", server_id)
    wait_status(cloud, server_id, "ACTIVE")

    cloud.openstack("server", "delete", server_id)
    wait_status(cloud, server_id, "SOFT_DELETED")
    cloud.openstack("server", "delete", "--force", "--wait", server_id)
    assert "No Server found" in refused(cloud, "server", "show", server_id)
