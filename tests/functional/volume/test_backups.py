"""Backups into the object store: full and incremental (only changed chunks), restore to a new
or an existing volume with the same bytes, qcow2 volumes, record export/import, bad input."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.functional.volume.conftest import VolumeCloud, write_pattern

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = 1 << 20
REGIONS = (5 * MIB, 300 * MIB, 600 * MIB, 1000 * MIB)


def backend_of(volume: dict[str, Any]) -> str:
    return str(volume["os-vol-host-attr:host"]).rpartition("#")[2]


def regions(path: Path) -> list[bytes]:
    """The MiB at each offset the tests write to (the rest of a volume is zeros)."""
    with open(path, "rb") as handle:
        found = []
        for offset in REGIONS:
            handle.seek(offset)
            found.append(handle.read(MIB))
    return found


async def backup(cloud: VolumeCloud, volume_id: str, **extra: Any) -> dict[str, Any]:
    created = await cloud.v3("POST", "/backups", json={"backup": {"volume_id": volume_id, **extra}})
    assert created.status_code == 202, created.text
    assert set(created.json()["backup"]) == {"id", "name", "links"}
    return await cloud.wait("backup", created.json()["backup"]["id"], ("available", "error"))


async def attached(cloud: VolumeCloud, volume_id: str) -> dict[str, Any]:
    """An attachment to another host, completed: the volume is ``in-use``."""
    reserved = await cloud.v3(
        "POST",
        "/attachments",
        json={"attachment": {"volume_uuid": volume_id, "connector": {"host": "elsewhere"}}},
    )
    attachment: dict[str, Any] = reserved.json()["attachment"]
    await cloud.v3("POST", f"/attachments/{attachment['id']}/action", json={"os-complete": None})
    return attachment


async def restored(cloud: VolumeCloud, backup_id: str, **body: Any) -> dict[str, Any]:
    response = await cloud.v3("POST", f"/backups/{backup_id}/restore", json={"restore": body})
    assert response.status_code == 202, response.text
    answer = response.json()["restore"]
    assert answer["backup_id"] == backup_id
    volume = await cloud.wait("volume", answer["volume_id"], ("available", "error_restoring"))
    await cloud.wait("backup", backup_id, ("available",))
    return volume


async def test_full_and_incremental_backups_restore_the_same_bytes(
    volume_cloud: VolumeCloud,
) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="precious")
    path = cloud.path_of(volume["id"], backend_of(volume))
    for offset in REGIONS[:2]:
        write_pattern(path, offset, os.urandom(MIB))
    full_state = regions(path)
    full = await backup(cloud, volume["id"], name="backup1")
    assert full["status"] == "available", full["fail_reason"]
    assert (full["container"], full["is_incremental"], full["size"]) == ("volumebackups", False, 1)
    # Two 4 MiB chunks hold data; zeros are not sent; plus the metadata object.
    assert full["object_count"] == 3
    assert (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"][
        "status"
    ] == "available"

    write_pattern(path, REGIONS[2], os.urandom(4096))
    incremental_state = regions(path)
    incremental = await backup(cloud, volume["id"], incremental=True)
    assert incremental["status"] == "available" and incremental["is_incremental"] is True
    assert incremental["object_count"] == 2  # only the changed chunk, and the metadata
    parent = (await cloud.v3("GET", f"/backups/{full['id']}")).json()["backup"]
    assert parent["has_dependent_backups"] is True
    blocked = await cloud.v3("DELETE", f"/backups/{full['id']}")
    assert blocked.status_code == 400 and "Incremental backups exist" in blocked.text

    new = await restored(cloud, incremental["id"], name="from-backup")
    assert new["status"] == "available" and new["name"] == "from-backup"
    assert regions(cloud.path_of(new["id"], backend_of(new))) == incremental_state

    bigger = await cloud.volume(size=2, name="target")
    target_path = cloud.path_of(bigger["id"], backend_of(bigger))
    write_pattern(target_path, REGIONS[3], b"old data" * 100)
    onto = await restored(cloud, full["id"], volume_id=bigger["id"])
    assert onto["id"] == bigger["id"] and onto["size"] == 2
    assert regions(cloud.path_of(bigger["id"], backend_of(bigger))) == full_state

    small_backup = await backup(cloud, bigger["id"])
    tiny = await cloud.volume(size=1)
    too_small = await cloud.v3(
        "POST",
        f"/backups/{small_backup['id']}/restore",
        json={"restore": {"volume_id": tiny["id"]}},
    )
    assert too_small.status_code == 400 and "too small" in too_small.text

    for backup_id in (incremental["id"], full["id"], small_backup["id"]):
        assert (await cloud.v3("DELETE", f"/backups/{backup_id}")).status_code == 202
        await cloud.gone("backup", backup_id)
    for other in (volume, new, bigger, tiny):
        await cloud.v3("DELETE", f"/volumes/{other['id']}")


async def test_backup_rules(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="rules")
    no_parent = await cloud.v3(
        "POST", "/backups", json={"backup": {"volume_id": volume["id"], "incremental": True}}
    )
    assert no_parent.status_code == 400 and "No backups available" in no_parent.text
    attachment = await attached(cloud, volume["id"])
    in_use = await cloud.v3("POST", "/backups", json={"backup": {"volume_id": volume["id"]}})
    assert in_use.status_code == 400 and "in-use" in in_use.text
    forced = await backup(cloud, volume["id"], force=True)
    assert forced["status"] == "available"
    shown = (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"]
    assert shown["status"] == "in-use"
    record = await cloud.v3("GET", f"/backups/{forced['id']}/export_record")
    exported = record.json()["backup-record"]
    assert exported["backup_service"] and exported["backup_url"]
    again = await cloud.v3("POST", "/backups/import_record", json={"backup-record": exported})
    assert again.status_code == 400 and "already exists" in again.text
    garbage = await cloud.v3(
        "POST",
        "/backups/import_record",
        json={
            "backup-record": {
                "backup_service": exported["backup_service"],
                "backup_url": "not base64!",
            }
        },
    )
    assert garbage.status_code == 400
    # Deleted, then imported from the record: the objects are still there, restore works.
    assert (await cloud.v3("DELETE", f"/backups/{forced['id']}")).status_code == 202
    await cloud.gone("backup", forced["id"])
    await cloud.v3("DELETE", f"/attachments/{attachment['id']}")
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")


async def test_qcow2_volume_backup_and_record_import(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="qcow-source", availability_zone="az-qcow")
    assert backend_of(volume) == "qcow"
    path = cloud.path_of(volume["id"], "qcow")
    assert path.suffix == ".qcow2"
    writer = await asyncio.create_subprocess_exec(
        "qemu-io",
        "-f",
        "qcow2",
        "-c",
        f"write -P 0x5a {REGIONS[1]} 1M",
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert await writer.wait() == 0
    made = await backup(cloud, volume["id"])
    assert made["status"] == "available", made["fail_reason"]
    record = (await cloud.v3("GET", f"/backups/{made['id']}/export_record")).json()["backup-record"]
    # Forget the backup's record only (as another cloud would not know it), then import it.
    async with cloud.cloud.units["volume"].service.db.session() as session:
        from onestack.volume.models import Backup

        await session.delete(await session.get(Backup, made["id"]))
    imported = await cloud.v3("POST", "/backups/import_record", json={"backup-record": record})
    assert imported.status_code == 201, imported.text
    assert imported.json()["backup"]["id"] == made["id"]
    raw = await cloud.volume(name="raw-target")
    await restored(cloud, made["id"], volume_id=raw["id"])
    assert regions(cloud.path_of(raw["id"], backend_of(raw)))[1] == b"\x5a" * MIB
    # A new volume from the backup is made in the backup's zone: a qcow2 file again.
    back_into_qcow = await restored(cloud, made["id"])
    assert backend_of(back_into_qcow) == "qcow"
    check = await asyncio.create_subprocess_exec(
        "qemu-io",
        "-f",
        "qcow2",
        "-r",
        "-c",
        f"read -P 0x5a {REGIONS[1]} 1M",
        str(cloud.path_of(back_into_qcow["id"], "qcow")),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await check.communicate()
    assert b"Pattern verification failed" not in out and check.returncode == 0
    await cloud.v3("DELETE", f"/backups/{made['id']}")
    for other in (volume, raw, back_into_qcow):
        await cloud.v3("DELETE", f"/volumes/{other['id']}")
