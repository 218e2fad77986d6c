"""Backups of a bootable volume (created from an image): created, and a restore keeps the
bootable flag and the image metadata as Cinder does; with the backup service disabled a
backup is refused with Cinder's 503 (what Tempest met after an earlier test disabled it).
A snapshot's backup holds the snapshot's data and needs no force for an attached volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.volume.conftest import VolumeCloud, write_pattern
from tests.functional.volume.test_backups import attached, backup, restored
from tests.functional.volume.test_images import (
    qcow2_with_pattern,
    upload_image,
    volume_from_image,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1 << 20


async def test_bootable_volume_backup_restores_bootable(
    volume_cloud: VolumeCloud, tmp_path: Path
) -> None:
    cloud = volume_cloud
    image = await upload_image(cloud, "boot", await qcow2_with_pattern(tmp_path), "qcow2")
    volume = await volume_from_image(cloud, image["id"])

    services = (await cloud.v3("GET", "/os-services?binary=cinder-backup")).json()["services"]
    target = {"host": services[0]["host"], "binary": "cinder-backup"}
    disabled = await cloud.v3(
        "PUT", "/os-services/disable-log-reason", json={**target, "disabled_reason": "test"}
    )
    assert disabled.status_code == 200, disabled.text
    refused = await cloud.v3("POST", "/backups", json={"backup": {"volume_id": volume["id"]}})
    assert refused.status_code == 503 and "cinder-backup" in refused.text
    assert (await cloud.v3("PUT", "/os-services/enable", json=target)).status_code == 200
    assert (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"][
        "status"
    ] == "available"

    saved = await backup(cloud, volume["id"], name="boot-backup")
    assert saved["status"] == "available", saved["fail_reason"]

    new = await restored(cloud, saved["id"], name="boot-restored")
    assert new["status"] == "available"
    assert new["bootable"] == "true"
    assert new["volume_image_metadata"]["image_id"] == image["id"]
    assert new["volume_image_metadata"]["disk_format"] == "qcow2"
    path = cloud.path_of(new["id"], new["os-vol-host-attr:host"].rpartition("#")[2])
    with open(path, "rb") as handle:
        assert handle.read(1 << 20) == b"A" * (1 << 20)


async def test_backup_of_a_snapshot_holds_the_snapshot_data(
    volume_cloud: VolumeCloud,
) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="snapped")
    path = cloud.path_of(volume["id"], volume["os-vol-host-attr:host"].rpartition("#")[2])
    write_pattern(path, 0, b"S" * MIB)
    made = await cloud.v3("POST", "/snapshots", json={"snapshot": {"volume_id": volume["id"]}})
    assert made.status_code == 202, made.text
    snapshot = await cloud.wait("snapshot", made.json()["snapshot"]["id"], ("available", "error"))
    assert snapshot["status"] == "available"
    write_pattern(path, 0, b"V" * MIB)  # the volume moves on; the snapshot keeps "S"

    attachment = await attached(cloud, volume["id"])
    in_use = await cloud.v3("POST", "/backups", json={"backup": {"volume_id": volume["id"]}})
    assert in_use.status_code == 400 and "force" in in_use.text
    # A snapshot's backup needs no force, as in Cinder: the attached volume is not read.
    saved = await backup(cloud, volume["id"], snapshot_id=snapshot["id"])
    assert saved["status"] == "available", saved["fail_reason"]
    assert saved["snapshot_id"] == snapshot["id"]
    shown = (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"]
    assert shown["status"] == "in-use"
    again = (await cloud.v3("GET", f"/snapshots/{snapshot['id']}")).json()["snapshot"]
    assert again["status"] == "available"

    new = await restored(cloud, saved["id"], name="from-snapshot-backup")
    assert new["status"] == "available"
    new_path = cloud.path_of(new["id"], new["os-vol-host-attr:host"].rpartition("#")[2])
    with open(new_path, "rb") as handle:
        assert handle.read(MIB) == b"S" * MIB
    await cloud.v3("DELETE", f"/attachments/{attachment['id']}")
