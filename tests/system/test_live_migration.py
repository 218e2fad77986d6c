"""Moves of a real guest between two QEMU compute hosts that share no storage.

``onestack up`` on RabbitMQ runs the cloud, the network agent and one qemu compute
agent named after the machine; ``onestack agent compute --host <second> --driver qemu
--data-dir <its own>``, its own process on the same bus, is the second host: the hosts'
instance directories differ, so disks travel over NBD. One guest booted from the image
``onestack guest-image build`` makes, with a token written into its root disk, moves:
``openstack server migrate --live-migration --host`` (block migration; it still answers
ping from its network's DHCP namespace), ``server migrate`` + ``server resize confirm``
(cold), ``server resize --flavor`` + ``server resize revert``. After each move the token
is on the disk and the host that gave the guest away holds no file of it (a revert keeps
the source's copy). Every process, tap, namespace and file is gone at the end.
Needs root, QEMU and RabbitMQ (under CI=true: fails, never skips).
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Deployment, Process, free_port
from tests.system.guest_console import boots, serial, wait_booted
from tests.system.test_guest_cloud import _assert_nothing_left, _delete_everything, _marker

SECOND_HOST = "livemig-b"
# A sector near the end of the 1 GiB root disk, far from the image's data.
TOKEN_SECTOR = 2_000_000


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from tests.backends import isolated_amqp_url

    bus = isolated_amqp_url()
    data_dir = tmp_path_factory.mktemp("livemig")
    second_dir = data_dir / "second-host"
    port = free_port()
    cloud_process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD, "--bus", bus],
        data_dir / "cloud.out",
        # One network agent serves both hosts' guests: their taps share its bridges.
        env={"ONESTACK_COMPUTE__LOCAL_AGENTS": "true", "ONESTACK_NETWORK__LOCAL_AGENT": "true",
             "ONESTACK_NETWORK__GUEST_HOSTS": f'["{SECOND_HOST}"]'},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    processes = [cloud_process]
    deployment = Deployment("live-migration", auth_url, processes)
    deployment.extra_env = {"data_dir": str(data_dir), "second_dir": str(second_dir)}
    try:
        cloud_process.wait_ready(auth_url)
        password = (data_dir / "service-password").read_text().strip()
        agent = Process(
            ["agent", "compute", "--host", SECOND_HOST, "--driver", "qemu", "--bus", bus,
             "--data-dir", str(second_dir)],
            data_dir / "agent.out",
            env={"ONESTACK_IDENTITY_URL": auth_url, "ONESTACK_SERVICE_PASSWORD": password},
        )  # fmt: skip
        processes.append(agent)
        deadline = time.monotonic() + 90
        while True:
            hypervisors = deployment.json("hypervisor", "list")
            up = [h for h in hypervisors if h["Hypervisor Type"] == "QEMU" and h["State"] == "up"]
            if len(up) == 2:
                break
            assert time.monotonic() < deadline, f"two QEMU hosts did not come up: {hypervisors}"
            time.sleep(1)
        yield deployment
        _delete_everything(deployment)
    finally:
        for process in reversed(processes):
            assert process.stop() == 0, process.log.read_text()[-2000:]
    _assert_nothing_left(deployment)
    assert not list(second_dir.glob("compute/*/instances/*")), "instance files left behind"


def _pings(network_id: str, address: str) -> bool:
    namespace = f"qdhcp-{network_id}"
    done = subprocess.run(["ip", "netns", "exec", namespace, "ping", "-c", "1", "-W", "1",
                           address], capture_output=True)  # fmt: skip
    return done.returncode == 0


def _data_dir(cloud: Deployment, host: str) -> str:
    return cloud.extra_env["second_dir" if host == SECOND_HOST else "data_dir"]


def _on(cloud: Deployment, host: str) -> Deployment:
    """``cloud`` seen from ``host``'s data directory (where the guest console helpers
    find the guest's serial socket)."""
    return dataclasses.replace(cloud, extra_env={**cloud.extra_env,
                                                 "data_dir": _data_dir(cloud, host)})  # fmt: skip


def _instance_dirs(cloud: Deployment, host: str, server_id: str) -> list[Path]:
    return list(Path(_data_dir(cloud, host)).glob(f"compute/{host}/instances/{server_id}"))


def _token_on_disk(cloud: Deployment, host: str, disk: str = "vda") -> str:
    """What the guest reads back from ``disk``'s token sector on ``host``."""
    command = f"dd if=/dev/{disk} bs=512 skip={TOKEN_SECTOR} count=1 2>/dev/null | head -c 24"
    return serial(_on(cloud, host), "mover", command, r"token-\w{8}")


def _write_token(cloud: Deployment, host: str, token: str, disk: str = "vda") -> None:
    serial(_on(cloud, host), "mover",
           f"echo {token} | dd of=/dev/{disk} bs=512 seek={TOKEN_SECTOR} conv=notrunc,fsync; "
           "echo flushed", r"flushed\s")  # fmt: skip
    assert token in _token_on_disk(cloud, host, disk)


def _host(cloud: Deployment, server_id: str) -> str:
    return cloud.json("server", "show", server_id)["OS-EXT-SRV-ATTR:host"]


def _settled(cloud: Deployment, server_id: str, timeout: float = 90, until: str = "") -> dict:
    """The server once no task runs on it (and, unless ``until`` is that status, it is not
    waiting for a confirm or revert)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = cloud.json("server", "show", server_id)
        if not shown["OS-EXT-STS:task_state"] and (shown["status"] == until or (
                not until and shown["status"] != "VERIFY_RESIZE")):  # fmt: skip
            return shown
        if shown["status"] == "ERROR" or (until and shown["status"] == "ACTIVE"):
            return shown
        assert time.monotonic() < deadline, f"the server stays {shown['status']}"
        time.sleep(1)


@pytest.fixture(scope="module")
def mover(two_hosts: Deployment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A guest with a token written (and flushed) into its root disk."""
    cloud = two_hosts
    image = tmp_path_factory.mktemp("image") / "guest.qcow2"
    subprocess.run([str(BIN / "onestack"), "guest-image", "build", "--output", str(image)],
                   check=True, capture_output=True)  # fmt: skip
    cloud.openstack("image", "create", "--file", str(image), "--disk-format", "qcow2",
                    "--container-format", "bare", "guest")  # fmt: skip
    network = cloud.json("network", "create", "mignet")["id"]
    cloud.openstack("subnet", "create", "--network", "mignet", "--subnet-range",
                    "10.78.0.0/24", "migsub")  # fmt: skip
    created = cloud.json("server", "create", "--image", "guest", "--flavor", "m1.tiny",
                         "--network", "mignet", "--wait", "mover")  # fmt: skip
    _marker(cloud, "mover")
    token = "token-" + created["id"][:8]
    host = _host(cloud, created["id"])
    _write_token(cloud, host, token)
    return {"id": created["id"], "network": network, "token": token}


def test_live_migration_keeps_the_guest_answering(
    two_hosts: Deployment, mover: dict[str, str]
) -> None:
    cloud = two_hosts
    server_id = mover["id"]
    shown = cloud.json("server", "show", server_id)
    address = shown["addresses"]["mignet"][0]
    source = shown["OS-EXT-SRV-ATTR:host"]
    hosts = [h["Hypervisor Hostname"] for h in cloud.json("hypervisor", "list")]
    (target,) = [h for h in hosts if h != source]
    port = cloud.json("port", "list", "--server", server_id)[0]
    group = cloud.json("port", "show", port["ID"])["security_group_ids"][0]
    cloud.openstack("security", "group", "rule", "create", "--ingress", "--protocol", "icmp",
                    group)  # fmt: skip
    deadline = time.monotonic() + 30
    while not _pings(mover["network"], address):
        assert time.monotonic() < deadline, f"the guest at {address} does not answer before"

    started = time.monotonic()
    cloud.openstack("--os-compute-api-version", "2.30", "server", "migrate", "--live-migration",
                    "--host", target, "--wait", server_id)  # fmt: skip
    print(f"live migration {time.monotonic() - started:.1f} s")
    shown = cloud.json("server", "show", server_id)
    assert shown["status"] == "ACTIVE", shown["status"]
    assert shown["OS-EXT-SRV-ATTR:host"] == target
    deadline = time.monotonic() + 30
    while not _pings(mover["network"], address):
        assert time.monotonic() < deadline, f"the migrated guest at {address} does not answer"
    qemus = subprocess.run(["pgrep", "-af", "--", f"-uuid {server_id}"], capture_output=True,
                           text=True).stdout.splitlines()  # fmt: skip
    assert len(qemus) == 1, f"one QEMU process after the move, not {qemus}"
    # The disk was mirrored to the new host, not read from the old one's files.
    assert mover["token"] in _token_on_disk(cloud, target)
    assert not _instance_dirs(cloud, source, server_id), "the source kept the guest's files"

    migrations = cloud.json("--os-compute-api-version", "2.59", "server", "migration", "list",
                            "--server", server_id)  # fmt: skip
    assert [(m["Source Node"], m["Dest Node"], m["Status"], m["Type"]) for m in migrations] == [
        (source, target, "completed", "live-migration")
    ], migrations

    # And back (the other agent's process is the destination now), without --host.
    cloud.openstack("--os-compute-api-version", "2.30", "server", "migrate", "--live-migration",
                    "--wait", server_id)  # fmt: skip
    assert _host(cloud, server_id) == source
    assert mover["token"] in _token_on_disk(cloud, source)
    assert not _instance_dirs(cloud, target, server_id), "the source kept the guest's files"


def test_cold_migration_and_confirm_copy_the_disks(
    two_hosts: Deployment, mover: dict[str, str]
) -> None:
    cloud = two_hosts
    server_id = mover["id"]
    source = _host(cloud, server_id)
    started = time.monotonic()
    cloud.openstack("server", "migrate", "--wait", server_id)
    print(f"cold migration {time.monotonic() - started:.1f} s")
    shown = cloud.json("server", "show", server_id)
    assert shown["status"] == "VERIFY_RESIZE", shown["status"]
    target = shown["OS-EXT-SRV-ATTR:host"]
    assert target != source
    assert _instance_dirs(cloud, source, server_id), "the source's copy went before confirm"
    cloud.openstack("server", "resize", "confirm", server_id)
    assert _settled(cloud, server_id)["status"] == "ACTIVE"
    wait_booted(cloud, "mover")  # the first boot the new host's console shows
    assert mover["token"] in _token_on_disk(cloud, target)
    assert not _instance_dirs(cloud, source, server_id), "the source kept the guest's files"


def test_resize_and_revert_keep_the_disk(two_hosts: Deployment, mover: dict[str, str]) -> None:
    cloud = two_hosts
    server_id = mover["id"]
    cloud.openstack("flavor", "create", "--ram", "512", "--disk", "2", "--vcpus", "1",
                    "mig.bigger")  # fmt: skip
    source = _host(cloud, server_id)
    before = boots(cloud, "mover")
    # Without --wait: the CLI's own limit (120 s) is short when the guest ignores the
    # power button for the minute the source waits before pulling the plug.
    cloud.openstack("server", "resize", "--flavor", "mig.bigger", server_id)
    shown = _settled(cloud, server_id, timeout=240, until="VERIFY_RESIZE")
    assert shown["status"] == "VERIFY_RESIZE", shown["status"]
    target = shown["OS-EXT-SRV-ATTR:host"]
    assert target != source
    wait_booted(cloud, "mover")
    grown = serial(_on(cloud, target), "mover",
                   "echo size=$(($(cat /sys/block/vda/size) * 512))", r"size=\d+\s")  # fmt: skip
    assert "size=2147483648" in grown, grown
    assert mover["token"] in _token_on_disk(cloud, target)

    cloud.openstack("server", "resize", "revert", server_id)
    shown = _settled(cloud, server_id)
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source), shown
    assert "m1.tiny" in str(shown["flavor"]), shown["flavor"]
    wait_booted(cloud, "mover", before)  # the source's console keeps its earlier boots
    assert mover["token"] in _token_on_disk(cloud, source)
    assert not _instance_dirs(cloud, target, server_id), "the reverted host kept the files"


def test_deleting_a_resized_server_removes_both_copies(
    two_hosts: Deployment, mover: dict[str, str]
) -> None:
    cloud = two_hosts
    server_id = mover["id"]
    source = _host(cloud, server_id)
    cloud.openstack("server", "resize", "--flavor", "mig.bigger", "--wait", server_id)
    target = _host(cloud, server_id)
    assert _instance_dirs(cloud, source, server_id) and _instance_dirs(cloud, target, server_id)
    cloud.openstack("server", "delete", "--wait", server_id)
    assert not _instance_dirs(cloud, source, server_id), "the source copy stayed"
    assert not _instance_dirs(cloud, target, server_id), "the destination copy stayed"
    exports = subprocess.run(["pgrep", "-af", "qemu-nbd"], capture_output=True, text=True)
    assert server_id not in exports.stdout, exports.stdout
