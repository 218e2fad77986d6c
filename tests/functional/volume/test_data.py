"""Data on the file backend: snapshots, clones, revert, retype and migration between
backends, and that failed operations never damage a volume's data."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from onestack.volume.drivers.base import VolumeDriverError
from tests.functional.volume.conftest import (
    GIB,
    VolumeCloud,
    digest,
    write_pattern,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PATTERN = os.urandom(1 << 20)


async def seeded(cloud: VolumeCloud, **body: object) -> tuple[dict[str, object], str]:
    """An available volume with a random MiB written 5 MiB in; its checksum."""
    volume = await cloud.volume(**body)
    path = cloud.path_of(str(volume["id"]), backend_of(volume))
    write_pattern(path, 5 << 20, PATTERN)
    return volume, digest(path)


def backend_of(volume: dict[str, object]) -> str:
    return str(volume["os-vol-host-attr:host"]).rpartition("#")[2]


def driver(cloud: VolumeCloud, backend: str) -> object:
    unit = cloud.cloud.units["volume"]
    [agent] = [a for a in unit.agents if getattr(a, "host", "").endswith(f"@{backend}")]
    return agent.driver


async def settled(cloud: VolumeCloud, volume_id: object, migration: str) -> dict[str, Any]:
    """The volume once its migration status is ``migration``."""
    for _ in range(400):
        body: dict[str, Any] = (await cloud.v3("GET", f"/volumes/{volume_id}")).json()["volume"]
        if body["migration_status"] == migration and body["status"] == "available":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"volume {volume_id} never reached migration status {migration}")


async def action(
    cloud: VolumeCloud, volume_id: object, body: dict[str, object], token: str | None = None
) -> int:
    return (await cloud.v3("POST", f"/volumes/{volume_id}/action", token, json=body)).status_code


async def test_snapshot_clone_and_volume_from_snapshot_keep_the_bytes(
    volume_cloud: VolumeCloud,
) -> None:
    cloud = volume_cloud
    volume, checksum = await seeded(cloud, name="source")
    snap = await cloud.v3(
        "POST", "/snapshots", json={"snapshot": {"volume_id": volume["id"], "name": "s1"}}
    )
    assert snap.status_code == 202
    snapshot = await cloud.wait("snapshot", snap.json()["snapshot"]["id"], ("available",))
    assert snapshot["os-extended-snapshot-attributes:progress"] == "100%"
    small = await cloud.v3(
        "POST", "/volumes", json={"volume": {"size": 1, "snapshot_id": snapshot["id"]}}
    )
    from_snap = await cloud.wait("volume", small.json()["volume"]["id"], ("available",))
    assert from_snap["snapshot_id"] == snapshot["id"] and backend_of(from_snap) == backend_of(
        volume
    )
    assert digest(cloud.path_of(str(from_snap["id"]), backend_of(from_snap))) == checksum
    bigger = await cloud.volume(size=2, source_volid=volume["id"])
    clone_path = cloud.path_of(str(bigger["id"]), backend_of(bigger))
    assert os.path.getsize(clone_path) == 2 * GIB
    with open(clone_path, "rb") as handle:
        handle.seek(5 << 20)
        assert handle.read(len(PATTERN)) == PATTERN
    # Too small for its source: 400; a volume with snapshots cannot go without cascade.
    too_small = await cloud.v3(
        "POST", "/volumes", json={"volume": {"size": 1, "source_volid": bigger["id"]}}
    )
    assert too_small.status_code == 400 and "cannot be smaller" in too_small.text
    blocked = await cloud.v3("DELETE", f"/volumes/{volume['id']}")
    assert blocked.status_code == 400 and "dependent snapshots" in blocked.text
    assert (await cloud.v3("DELETE", f"/volumes/{volume['id']}?cascade=true")).status_code == 202
    await cloud.gone("volume", str(volume["id"]))
    await cloud.gone("snapshot", snapshot["id"])
    for other in (from_snap, bigger):
        await cloud.v3("DELETE", f"/volumes/{other['id']}")


async def test_revert_to_the_latest_snapshot(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    volume, checksum = await seeded(cloud, name="revertible")
    snap = await cloud.v3("POST", "/snapshots", json={"snapshot": {"volume_id": volume["id"]}})
    snapshot = await cloud.wait("snapshot", snap.json()["snapshot"]["id"], ("available",))
    path = cloud.path_of(str(volume["id"]), backend_of(volume))
    write_pattern(path, 5 << 20, b"\xff" * 4096)
    assert digest(path) != checksum
    assert await action(cloud, volume["id"], {"revert": {"snapshot_id": snapshot["id"]}}) == 202
    await cloud.wait("volume", str(volume["id"]), ("available",))
    assert digest(cloud.path_of(str(volume["id"]), backend_of(volume))) == checksum
    await cloud.v3("DELETE", f"/volumes/{volume['id']}?cascade=true")


async def test_failed_extend_leaves_the_data_and_the_quota_alone(
    volume_cloud: VolumeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = volume_cloud
    volume, checksum = await seeded(cloud, name="fragile")
    before = (await cloud.v3("GET", "/limits")).json()["limits"]["absolute"]["totalGigabytesUsed"]

    async def broken(*_args: object) -> None:
        raise VolumeDriverError("the disk controller caught fire")

    monkeypatch.setattr(driver(cloud, backend_of(volume)), "extend_volume", broken)
    assert await action(cloud, volume["id"], {"os-extend": {"new_size": 4}}) == 202
    after = await cloud.wait("volume", str(volume["id"]), ("available", "error_extending", "error"))
    assert (after["status"], after["size"]) == ("available", 1)
    assert digest(cloud.path_of(str(volume["id"]), backend_of(volume))) == checksum
    used = (await cloud.v3("GET", "/limits")).json()["limits"]["absolute"]["totalGigabytesUsed"]
    assert used == before
    messages = (await cloud.v3("GET", f"/messages?resource_uuid={volume['id']}")).json()["messages"]
    assert any("caught fire" in m["user_message"] for m in messages)
    # Beyond what the backend can promise: the scheduler refuses, nothing changes either.
    project = volume["os-vol-tenant-attr:tenant_id"]
    unlimited = {"quota_set": {"gigabytes": -1}}
    assert (await cloud.v3("PUT", f"/os-quota-sets/{project}", json=unlimited)).status_code == 200
    assert await action(cloud, volume["id"], {"os-extend": {"new_size": 10**8}}) == 202
    after = await cloud.wait("volume", str(volume["id"]), ("available",))
    assert after["size"] == 1
    assert digest(cloud.path_of(str(volume["id"]), backend_of(volume))) == checksum
    await cloud.v3("DELETE", f"/os-quota-sets/{project}")
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")


async def test_retype_migrates_between_backends_and_failure_keeps_the_original(
    volume_cloud: VolumeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = volume_cloud
    for name, backend in (("on-file", "file"), ("on-ssd", "file2")):
        created = await cloud.v3(
            "POST",
            "/types",
            json={"volume_type": {"name": name, "extra_specs": {"volume_backend_name": backend}}},
        )
        assert created.status_code == 200, created.text
    volume, checksum = await seeded(cloud, name="mover", volume_type="on-file")
    assert backend_of(volume) == "file"
    # Never migrate: the file backend does not suit on-ssd, so nothing changes.
    assert await action(cloud, volume["id"], {"os-retype": {"new_type": "on-ssd"}}) == 202
    kept = await cloud.wait("volume", str(volume["id"]), ("available",))
    assert (kept["volume_type"], backend_of(kept)) == ("on-file", "file")
    # A failing copy on the destination: the original stays where it was, intact.

    async def broken(*_args: object) -> None:
        raise VolumeDriverError("destination disk full")

    monkeypatch.setattr(driver(cloud, "file2"), "copy_volume_from", broken)
    retype = {"os-retype": {"new_type": "on-ssd", "migration_policy": "on-demand"}}
    assert await action(cloud, volume["id"], retype) == 202
    failed = await settled(cloud, volume["id"], "error")
    assert (failed["migration_status"], failed["volume_type"], backend_of(failed)) == (
        "error",
        "on-file",
        "file",
    )
    assert digest(cloud.path_of(str(volume["id"]), "file")) == checksum
    monkeypatch.undo()
    assert await action(cloud, volume["id"], retype) == 202
    moved = await settled(cloud, volume["id"], "success")
    assert (moved["status"], moved["volume_type"], backend_of(moved)) == (
        "available",
        "on-ssd",
        "file2",
    )
    assert digest(cloud.path_of(str(volume["id"]), "file2")) == checksum
    assert not list(
        (cloud.cloud.settings.data_dir / "volumes" / "file").glob(f"volume-{volume['id']}.*")
    )
    # A type any backend suits: the volume stays; then an admin moves it back by host name,
    # which the scheduler refuses while the type still pins it to file2.
    host = str(moved["os-vol-host-attr:host"]).replace("file2", "file")
    assert await action(cloud, volume["id"], {"os-migrate_volume": {"host": host}}) == 202
    refused = await settled(cloud, volume["id"], "error")
    assert backend_of(refused) == "file2"
    assert await action(cloud, volume["id"], {"os-retype": {"new_type": "__DEFAULT__"}}) == 202
    retyped = await cloud.wait("volume", str(volume["id"]), ("available",))
    assert (retyped["volume_type"], backend_of(retyped)) == ("__DEFAULT__", "file2")
    assert await action(cloud, volume["id"], {"os-migrate_volume": {"host": host}}) == 202
    back = await settled(cloud, volume["id"], "success")
    assert backend_of(back) == "file"
    assert digest(cloud.path_of(str(volume["id"]), "file")) == checksum
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")
