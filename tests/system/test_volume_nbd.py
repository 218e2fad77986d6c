"""A volume attached over NBD into a real guest on ``onestack up`` (root, qemu driver).

The volume service runs under another host name than the compute host
(``ONESTACK_VOLUME__HOST``), so the file backend exports the volume through a
``qemu-storage-daemon`` NBD server instead of handing out its path, as it does for a remote
compute host. The guest formats, mounts and writes the disk, is suspended and resumed (the
export is on its command line then), the volume is swapped for another exported one under
the mounted file system; after ``server remove volume`` the exports are gone and the host
reads the same file back from each volume's own file (``qemu-img convert`` + ``debugfs``).
Needs root, QEMU and e2fsprogs (under CI=true: fails, never skips).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Deployment
from tests.system.guest_console import (
    GUEST_TOOLS,
    admin_sdk,
    checksum,
    format_and_write,
    guest_cloud,
    mount,
    server_status,
    unmount,
    volume_status,
    wait_disk,
    wait_disk_gone,
)
from tests.system.requirements import require

ENV = {"ONESTACK_NETWORK__DRIVER": "noop", "ONESTACK_VOLUME__HOST": "nbd-storage"}
require(*GUEST_TOOLS, "qemu-storage-daemon", "debugfs")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A cloud whose volume host is not its compute host, with one booted guest."""
    with guest_cloud(tmp_path_factory.mktemp("volnbd"), ENV, "10.79.0.0/24",
                     {"vm-nbd": []}) as deployment:  # fmt: skip
        yield deployment


def _exporters(volume_id: str) -> list[str]:
    """The pids of the qemu-storage-daemon processes serving the volume."""
    found = subprocess.run(["pgrep", "-f", f"qemu-storage-daemon.*name={volume_id}"],
                           capture_output=True, text=True)  # fmt: skip
    return found.stdout.split()


def test_attach_over_nbd_and_read_back_on_the_host(cloud: Deployment) -> None:
    services = cloud.json("volume", "service", "list")
    assert any(s["Host"].startswith("nbd-storage@") and s["State"] == "up" for s in services)
    cloud.openstack("volume", "create", "--size", "1", "nbdvol")
    volume_id = volume_status(cloud, "nbdvol", "available")["id"]
    cloud.openstack("server", "add", "volume", "vm-nbd", "nbdvol")
    volume_status(cloud, "nbdvol", "in-use")
    wait_disk(cloud, "vm-nbd")

    # The guest's disk is the NBD export, not the file.
    server_id = cloud.json("server", "show", "vm-nbd")["id"]
    data_dir = Path(cloud.extra_env["data_dir"])
    (record,) = data_dir.glob(f"compute/*/instances/{server_id}/volumes.json")
    plugged = json.loads(record.read_text())[volume_id]
    assert plugged["connection_info"]["driver_volume_type"] == "nbd", plugged
    assert _exporters(volume_id), "no qemu-storage-daemon serves the volume"

    token = f"onestack-{uuid.uuid4().hex[:12]}"
    written = format_and_write(cloud, "vm-nbd", token)

    # Resumed from saved memory, the guest reconnects to the export at its old address.
    cloud.openstack("server", "suspend", "vm-nbd")
    server_status(cloud, "vm-nbd", "SUSPENDED")
    cloud.openstack("server", "resume", "vm-nbd")
    server_status(cloud, "vm-nbd", "ACTIVE")
    mount(cloud, "vm-nbd")
    assert checksum(cloud, "vm-nbd") == written

    # Swapped for another exported volume under the mounted file system.
    cloud.openstack("volume", "create", "--size", "1", "nbdvol2")
    new_id = volume_status(cloud, "nbdvol2", "available")["id"]
    admin_sdk(cloud).compute.update_volume_attachment(server_id, volume_id, volume_id=new_id)
    volume_status(cloud, "nbdvol2", "in-use")
    volume_status(cloud, "nbdvol", "available")
    assert _exporters(new_id) and not _exporters(volume_id)
    unmount(cloud, "vm-nbd")
    mount(cloud, "vm-nbd")
    assert checksum(cloud, "vm-nbd") == written
    unmount(cloud, "vm-nbd")

    cloud.openstack("server", "remove", "volume", "vm-nbd", "nbdvol2")
    volume_status(cloud, "nbdvol2", "available")
    wait_disk_gone(cloud, "vm-nbd")
    deadline = time.monotonic() + 10
    while _exporters(new_id):
        assert time.monotonic() < deadline, "the NBD export outlived the attachment"
        time.sleep(0.2)

    # The host reads the guest's file from each volume's own file.
    for volume in (volume_id, new_id):
        assert _read_back(data_dir, volume) == (token, written)
    cloud.openstack("volume", "delete", "nbdvol", "nbdvol2")


def _read_back(data_dir: Path, volume_id: str) -> tuple[str, str]:
    """The first line and SHA-256 of the file ``/data`` in the volume's file system, read
    from its file on the host."""
    (volume_file,) = data_dir.glob(f"volumes/*/volume-{volume_id}.*")
    raw = data_dir / f"{volume_id}.raw"
    try:
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(volume_file), str(raw)],
                       check=True)  # fmt: skip
        data = subprocess.run(["debugfs", "-R", "cat /data", str(raw)], capture_output=True,
                              check=True).stdout  # fmt: skip
    finally:
        raw.unlink(missing_ok=True)
    return data.split(b"\n", 1)[0].decode(errors="replace"), hashlib.sha256(data).hexdigest()
