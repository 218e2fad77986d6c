"""Volumes in real guests on ``onestack up`` (root, qemu driver) with the real CLI.

``server add volume`` hot-plugs the volume: the guest sees /dev/vdb (typed into its serial
console); data written there is read back by a second guest after ``server remove volume``
and ``server add volume`` there; ``volume set --size 2`` while attached grows the disk the
guest sees; the second guest boots from a volume made from the image; a restart of the
agents keeps the attachment and a detach after it still reaches the guest. Needs root and
QEMU (under CI=true: fails, never skips).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onestack.compute.drivers.qemu.machine import Machine
from onestack.compute.guest_image import MARKER
from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Deployment, Process, free_port

TOOLS = ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.fat", "mcopy", "syslinux",
         "genisoimage")  # fmt: skip
BOOT_TIMEOUT = 150.0


def _missing() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


if _missing():
    if os.environ.get("CI") == "true":
        pytest.fail(f"needs {', '.join(_missing())}", pytrace=False)
    pytest.skip(f"needs {', '.join(_missing())}", allow_module_level=True)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A cloud with a QEMU host and two booted guests (no network data plane: quicker)."""
    data_dir = tmp_path_factory.mktemp("volguest")
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD],
        data_dir / "onestack.out",
        env={"ONESTACK_NETWORK__DRIVER": "noop"},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    deployment = Deployment("volume-guests", auth_url, [process])
    deployment.extra_env = {"data_dir": str(data_dir)}
    try:
        process.wait_ready(auth_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hypervisors = deployment.json("hypervisor", "list")
            if any(h["Hypervisor Type"] == "QEMU" and h["State"] == "up" for h in hypervisors):
                break
            time.sleep(1)
        else:
            pytest.fail(f"no QEMU hypervisor came up: {hypervisors}")
        image = data_dir / "guest.qcow2"
        subprocess.run([str(BIN / "onestack"), "guest-image", "build", "--output", str(image)],
                       check=True, capture_output=True)  # fmt: skip
        deployment.openstack("image", "create", "--file", str(image), "--disk-format", "qcow2",
                             "--container-format", "bare", "guest")  # fmt: skip
        deployment.openstack("network", "create", "volnet")
        deployment.openstack("subnet", "create", "--network", "volnet", "--subnet-range",
                             "10.78.0.0/24", "volsub")  # fmt: skip
        # vm-b boots from a volume made from the image.
        for name, options in (("vm-a", []), ("vm-b", ["--boot-from-volume", "1"])):
            deployment.openstack("server", "create", "--image", "guest", "--flavor", "m1.tiny",
                                 "--network", "volnet", *options, name)  # fmt: skip
        for name in ("vm-a", "vm-b"):
            _marker(deployment, name)
        yield deployment
    finally:
        for name in ("vm-a", "vm-b"):
            deployment.openstack("server", "delete", "--wait", name, check=False)
        current = deployment.processes[0]
        assert current.stop() == 0, current.log.read_text()[-2000:]


def _marker(cloud: Deployment, name: str) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        console = cloud.openstack("console", "log", "show", name, check=False).stdout
        if MARKER in console:
            return
        time.sleep(2)
    pytest.fail(f"{name} did not boot:\n{console[-2000:]}")


def _serial(cloud: Deployment, name: str, command: str, expect: str, timeout: float = 30) -> str:
    """Type ``command`` into the guest's serial shell; its output up to ``expect``."""
    server_id = cloud.json("server", "show", name)["id"]
    root = Path(cloud.extra_env["data_dir"]) / "compute"
    (directory,) = [p.resolve() for p in root.glob(f"*/instances/{server_id}")]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(Machine(directory).serial_socket))
        sock.settimeout(0.5)
        sock.sendall(b"\n" + command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and expect.encode() not in seen:
            try:
                seen += sock.recv(4096)
            except TimeoutError:
                continue
    text = seen.decode(errors="replace")
    assert expect in text, f"{name}: no {expect!r} after {command!r}:\n{text[-1500:]}"
    return text


def _until(cloud: Deployment, name: str, command: str, expect: str, timeout: float = 60) -> None:
    """Run ``command`` in the guest until its output shows ``expect``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _serial(cloud, name, command, expect, timeout=5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _volume(cloud: Deployment, name: str, status: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        volume: dict[str, Any] = cloud.json("volume", "show", name)
        if volume["status"] == status:
            return volume
        assert not volume["status"].startswith("error"), volume
        assert time.monotonic() < deadline, f"{name} stayed {volume['status']}"
        time.sleep(0.5)


def test_boot_from_volume(cloud: Deployment) -> None:
    (root,) = cloud.json("server", "show", "vm-b")["volumes_attached"]
    volume = cloud.json("volume", "show", root["id"])
    assert volume["status"] == "in-use" and volume["attachments"][0]["device"] == "/dev/vda"
    _until(cloud, "vm-b", "ls /sys/block | sed 's/^vda$/root-vda/'", "root-vda")


def test_volume_moves_between_guests_and_grows(cloud: Deployment) -> None:
    cloud.openstack("volume", "create", "--size", "1", "data1")
    _volume(cloud, "data1", "available")
    started = time.monotonic()
    cloud.openstack("server", "add", "volume", "vm-a", "data1")
    _volume(cloud, "data1", "in-use")
    # The command prints the device list with a suffix, so the echo of the typed line
    # itself cannot match.
    _until(cloud, "vm-a", "ls /sys/block | sed 's/^vdb$/vdb-present/'", "vdb-present")
    print(f"attach → /dev/vdb in the guest {time.monotonic() - started:.1f} s")

    token = f"onestack-{uuid.uuid4().hex[:12]}"
    _serial(cloud, "vm-a", f"echo {token} | dd of=/dev/vdb bs=512 count=1 conv=sync "
                           "2>/dev/null; sync; echo wr''itten", "written")  # fmt: skip
    cloud.openstack("server", "remove", "volume", "vm-a", "data1")
    _volume(cloud, "data1", "available")
    _until(cloud, "vm-a", "ls /sys/block | grep -c vdb | sed 's/^0$/vdb-gone/'", "vdb-gone")

    cloud.openstack("server", "add", "volume", "vm-b", "data1")
    _volume(cloud, "data1", "in-use")
    _until(cloud, "vm-b", "ls /sys/block | sed 's/^vdb$/vdb-present/'", "vdb-present")
    read = token.replace("onestack-", "ONESTACK-")
    _serial(cloud, "vm-b", "dd if=/dev/vdb bs=512 count=1 2>/dev/null | head -n 1 | "
                           "sed 's/onestack-/ONESTACK-/'", read)  # fmt: skip

    # Grown while attached: the guest sees 2 GiB (in 512-byte sectors).
    cloud.openstack("volume", "set", "--size", "2", "data1")
    _until(cloud, "vm-b", "cat /sys/block/vdb/size | sed 's/^4194304$/grown-to-2g/'",
           "grown-to-2g")  # fmt: skip
    assert _volume(cloud, "data1", "in-use")["size"] == 2

    # Both agents restart (the whole cloud does; the guests run on): the attachment holds,
    # and detaching afterwards still takes the disk out of the guest.
    _restart(cloud)
    assert _volume(cloud, "data1", "in-use")["attachments"][0]["device"] == "/dev/vdb"
    cloud.openstack("server", "remove", "volume", "vm-b", "data1")
    _volume(cloud, "data1", "available")
    _until(cloud, "vm-b", "ls /sys/block | grep -c vdb | sed 's/^0$/vdb-gone/'", "vdb-gone")
    cloud.openstack("volume", "delete", "data1")


def _restart(cloud: Deployment) -> None:
    old = cloud.processes[0]
    assert old.stop() == 0, old.log.read_text()[-2000:]
    new = Process(old.args, old.log.with_suffix(".restarted"),
                  env={"ONESTACK_NETWORK__DRIVER": "noop"})  # fmt: skip
    cloud.processes[0] = new
    new.wait_ready(cloud.auth_url)
    deadline = time.monotonic() + 60
    while not any(h["State"] == "up" for h in cloud.json("hypervisor", "list")):
        assert time.monotonic() < deadline, "the QEMU host did not come back"
        time.sleep(1)
    assert cloud.json("server", "show", "vm-b")["status"] == "ACTIVE"
