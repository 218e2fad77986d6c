"""Volumes and the image service: a bootable volume from a qcow2 image, and a volume uploaded
as a new image."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.functional.volume.conftest import VolumeCloud

pytestmark = pytest.mark.asyncio(loop_scope="module")

IMAGE = "/image/v2/images"


async def qcow2_with_pattern(directory: Path) -> bytes:
    """A 64 MiB qcow2 whose first MiB is 0x41 bytes."""
    path = directory / "guest.qcow2"
    for command in (
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"],
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 1M", str(path)],
    ):
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL)
        assert await process.wait() == 0
    return path.read_bytes()


async def upload_image(
    cloud: VolumeCloud, name: str, data: bytes, disk_format: str
) -> dict[str, Any]:
    created = await cloud.call(
        "POST",
        IMAGE,
        cloud.admin,
        json={"name": name, "disk_format": disk_format, "container_format": "bare"},
    )
    assert created.status_code == 201, created.text
    image: dict[str, Any] = created.json()
    stored = await cloud.call(
        "PUT",
        f"{IMAGE}/{image['id']}/file",
        cloud.admin,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert stored.status_code == 204, stored.text
    return image


async def volume_from_image(cloud: VolumeCloud, image_id: str) -> dict[str, Any]:
    """A 1 GiB volume made from an image, once available (and bootable)."""
    created = await cloud.v3("POST", "/volumes", json={"volume": {"size": 1, "imageRef": image_id}})
    assert created.status_code == 202, created.text
    volume = await cloud.wait("volume", created.json()["volume"]["id"], ("available", "error"))
    assert volume["status"] == "available"
    assert volume["bootable"] == "true"
    return volume


async def test_volume_from_image_and_back(volume_cloud: VolumeCloud, tmp_path: Path) -> None:
    cloud = volume_cloud
    image = await upload_image(cloud, "guest", await qcow2_with_pattern(tmp_path), "qcow2")
    volume = await volume_from_image(cloud, image["id"])
    assert volume["volume_image_metadata"]["image_id"] == image["id"]
    assert volume["volume_image_metadata"]["disk_format"] == "qcow2"
    path = cloud.path_of(volume["id"], volume["os-vol-host-attr:host"].rpartition("#")[2])
    with open(path, "rb") as handle:
        assert handle.read(1 << 20) == b"A" * (1 << 20)
        assert handle.read(16) == bytes(16)
    missing = await cloud.v3("POST", "/volumes", json={"volume": {"size": 1, "imageRef": "nope"}})
    assert missing.status_code == 400
    uploaded = await cloud.v3(
        "POST",
        f"/volumes/{volume['id']}/action",
        json={"os-volume_upload_image": {"image_name": "from-volume", "disk_format": "qcow2"}},
    )
    assert uploaded.status_code == 202, uploaded.text
    new_image = uploaded.json()["os-volume_upload_image"]["image_id"]
    await cloud.wait("volume", volume["id"], ("available",))
    for _ in range(200):
        shown = (await cloud.call("GET", f"{IMAGE}/{new_image}", cloud.admin)).json()
        if shown["status"] == "active":
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "active" and shown["virtual_size"] == 1 << 30
    data = await cloud.call("GET", f"{IMAGE}/{new_image}/file", cloud.admin)
    (tmp_path / "back.qcow2").write_bytes(data.content)
    convert = await asyncio.create_subprocess_exec(
        "qemu-img",
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        str(tmp_path / "back.qcow2"),
        str(tmp_path / "back.raw"),
    )
    assert await convert.wait() == 0
    with open(tmp_path / "back.raw", "rb") as handle:
        assert handle.read((1 << 20) + 16) == b"A" * (1 << 20) + bytes(16)
    bad_format = await cloud.v3(
        "POST",
        f"/volumes/{volume['id']}/action",
        json={"os-volume_upload_image": {"image_name": "x", "disk_format": "exe"}},
    )
    assert bad_format.status_code == 400
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")
