"""Real guests of an ``onestack up`` cloud driven with the CLI and their serial consoles:
the cloud with its booted guests, waiting for boots, typing commands into a guest's shell
and reading the answers, waiting for volume states, and the file-system steps the volume
tests repeat inside guests."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest

from onestack.compute.drivers.qemu.machine import Machine
from onestack.compute.guest_image import MARKER
from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Deployment, Process, free_port

BOOT_TIMEOUT = 150.0
MOUNT = "/mnt/vol"
GUEST_TOOLS = ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.fat", "mcopy", "syslinux",
               "genisoimage")  # fmt: skip


@contextlib.contextmanager
def guest_cloud(
    data_dir: Path, env: dict[str, str], cidr: str, servers: dict[str, list[str]]
) -> Iterator[Deployment]:
    """``onestack up`` in ``data_dir`` with ``env``, the guest image, a network of ``cidr``
    and the ``servers`` (name: extra ``server create`` options) booted; all deleted after."""
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD],
        data_dir / "onestack.out",
        env=env,
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    deployment = Deployment(data_dir.name, auth_url, [process])
    deployment.extra_env = {"data_dir": str(data_dir)}
    try:
        process.wait_ready(auth_url)
        deadline = time.monotonic() + 60
        while not any(h["Hypervisor Type"] == "QEMU" and h["State"] == "up"
                      for h in deployment.json("hypervisor", "list")):  # fmt: skip
            assert time.monotonic() < deadline, "no QEMU hypervisor came up"
            time.sleep(1)
        image = data_dir / "guest.qcow2"
        subprocess.run([str(BIN / "onestack"), "guest-image", "build", "--output", str(image)],
                       check=True, capture_output=True)  # fmt: skip
        deployment.openstack("image", "create", "--file", str(image), "--disk-format", "qcow2",
                             "--container-format", "bare", "guest")  # fmt: skip
        deployment.openstack("network", "create", "guestnet")
        deployment.openstack("subnet", "create", "--network", "guestnet", "--subnet-range",
                             cidr, "guestsub")  # fmt: skip
        for name, options in servers.items():
            deployment.openstack("server", "create", "--image", "guest", "--flavor", "m1.tiny",
                                 "--network", "guestnet", *options, name)  # fmt: skip
        for name in servers:
            wait_booted(deployment, name)
        yield deployment
    finally:
        for name in servers:
            deployment.openstack("server", "delete", "--wait", name, check=False)
        current = deployment.processes[0]
        assert current.stop() == 0, current.log.read_text()[-2000:]


def admin_sdk(cloud: Deployment) -> openstack.connection.Connection:
    """openstacksdk as the cloud's admin (for what the CLI has no command for)."""
    return openstack.connect(
        auth_url=cloud.auth_url, username="admin", password=ADMIN_PASSWORD, project_name="admin",
        user_domain_name="Default", project_domain_name="Default", region_name="RegionOne",
    )  # fmt: skip


def boots(cloud: Deployment, name: str) -> int:
    """How many times the guest has printed its boot marker so far."""
    console = cloud.openstack("console", "log", "show", name, check=False).stdout
    return console.count(MARKER)


def wait_booted(cloud: Deployment, name: str, after: int = 0) -> None:
    """Wait for boot number ``after + 1`` of the guest (its marker on the console)."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if boots(cloud, name) > after:
            return
        time.sleep(2)
    console = cloud.openstack("console", "log", "show", name, check=False).stdout
    pytest.fail(f"{name} did not boot:\n{console[-2000:]}")


def serial(cloud: Deployment, name: str, command: str, expect: str, timeout: float = 30) -> str:
    """Type ``command`` into the guest's serial shell; its output up to the regular
    expression ``expect``."""
    server_id = cloud.json("server", "show", name)["id"]
    root = Path(cloud.extra_env["data_dir"]) / "compute"
    (directory,) = [p.resolve() for p in root.glob(f"*/instances/{server_id}")]
    pattern = re.compile(expect)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(Machine(directory).serial_socket))
        sock.settimeout(0.5)
        sock.sendall(b"\n" + command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not pattern.search(seen.decode(errors="replace")):
            try:
                seen += sock.recv(4096)
            except TimeoutError:
                continue
    text = seen.decode(errors="replace")
    assert pattern.search(text), f"{name}: no {expect!r} after {command!r}:\n{text[-1500:]}"
    return text


def until(cloud: Deployment, name: str, command: str, expect: str, timeout: float = 60) -> str:
    """Run ``command`` in the guest until its output shows ``expect``; that output."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return serial(cloud, name, command, expect, timeout=5)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def volume_status(cloud: Deployment, name: str, status: str, timeout: float = 90) -> dict[str, Any]:
    """Wait for the volume to reach ``status`` (failing on an ``error*`` one)."""
    deadline = time.monotonic() + timeout
    while True:
        volume: dict[str, Any] = cloud.json("volume", "show", name)
        if volume["status"] == status:
            return volume
        assert not volume["status"].startswith("error"), volume
        assert time.monotonic() < deadline, f"{name} stayed {volume['status']}"
        time.sleep(0.5)


def server_status(cloud: Deployment, name: str, status: str, timeout: float = 120) -> None:
    """Wait for the server to reach ``status``."""
    deadline = time.monotonic() + timeout
    while (current := cloud.json("server", "show", name)["status"]) != status:
        assert current != "ERROR", cloud.json("server", "show", name).get("fault")
        assert time.monotonic() < deadline, f"{name} stayed {current}, not {status}"
        time.sleep(1)


# Each command prints its result with a suffix or through sed, so the echo of the typed line
# itself cannot match the expected answer.


def wait_disk(cloud: Deployment, name: str, disk: str = "vdb") -> None:
    """Wait until the guest's kernel shows the disk."""
    until(cloud, name, f"ls /sys/block | sed 's/^{disk}$/{disk}-present/'", f"{disk}-present")


def wait_disk_gone(cloud: Deployment, name: str, disk: str = "vdb") -> None:
    """Wait until the guest's kernel no longer shows the disk."""
    until(cloud, name, f"ls /sys/block | grep -c {disk} | sed 's/^0$/{disk}-gone/'",
          f"{disk}-gone")  # fmt: skip


def format_and_write(cloud: Deployment, name: str, token: str) -> str:
    """Make an ext2 file system on /dev/vdb, mount it, write a file of ``token`` and 256 KiB
    of random bytes, unmount; the file's SHA-256 as the guest computed it."""
    serial(
        cloud,
        name,
        "mke2fs -F /dev/vdb >/dev/null 2>&1 && echo mk''fs-done",
        "mkfs-done",
        timeout=120,
    )
    mount(cloud, name)
    serial(cloud, name, f"(echo {token}; dd if=/dev/urandom bs=64k count=4 2>/dev/null) > "
                        f"{MOUNT}/data && sync && echo wr''itten", "written")  # fmt: skip
    digest = checksum(cloud, name)
    unmount(cloud, name)
    return digest


def mount(cloud: Deployment, name: str) -> None:
    """Mount the file system of /dev/vdb on /mnt/vol."""
    serial(cloud, name, f"mkdir -p {MOUNT} && mount -t ext2 /dev/vdb {MOUNT} && "
                        f"grep -c ' {MOUNT} ' /proc/mounts | sed 's/^1$/mou''nted/'",
           "mounted", timeout=30)  # fmt: skip


def unmount(cloud: Deployment, name: str) -> None:
    """Unmount /mnt/vol (everything written reaches the disk)."""
    serial(cloud, name, f"sync && umount {MOUNT} && echo unmo''unted", "unmounted")


def checksum(cloud: Deployment, name: str) -> str:
    """The SHA-256 of the mounted volume's data file, read inside the guest."""
    text = serial(cloud, name, f"sha256sum {MOUNT}/data | sed 's/^\\([0-9a-f]*\\) .*/sum-\\1-/'",
                  r"sum-[0-9a-f]{64}-")  # fmt: skip
    match = re.search(r"sum-([0-9a-f]{64})-", text)
    assert match is not None
    return match.group(1)
