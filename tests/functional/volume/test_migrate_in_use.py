"""Moving an attached volume to another backend (migrate, on-demand retype): the new
backend's copy takes the volume's id through compute's swap (fake compute host whose
"hypervisor" copies the disk as QEMU's mirror would)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from onestack.cloud import Cloud
from onestack.compute.drivers.base import BlockDevice, DriverError, InstanceSpec
from onestack.core.config import VolumeBackendSettings
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.functional.volume.conftest import VolumeCloud

pytestmark = pytest.mark.asyncio(loop_scope="module")

V21 = "/compute/v2.1"
DATA = b"user data that must survive the move" * 100


class MigrationCloud(VolumeCloud):
    server_id: str = ""

    async def nova(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"OpenStack-API-Version": "compute 2.90"}
        return await self.call(method, f"{V21}{path}", self.admin, headers=headers, **kwargs)

    async def attached(self, type_name: str | None = None) -> dict[str, Any]:
        """A volume (of ``type_name``) holding DATA, attached to the server."""
        typed = {"volume_type": type_name} if type_name else {}
        volume = await self.volume(name=f"moved-{uuid.uuid4()}", **typed)
        with open(self.path_of(volume["id"], backend_name(volume)), "r+b") as handle:
            handle.write(DATA)
        path = f"/servers/{self.server_id}/os-volume_attachments"
        answer = await self.nova(
            "POST", path, json={"volumeAttachment": {"volumeId": volume["id"]}}
        )
        assert answer.status_code == 200, answer.text
        return await self.wait("volume", volume["id"], ("in-use",))

    async def migrated(self, volume_id: str) -> dict[str, Any]:
        for _ in range(600):
            body = (await self.v3("GET", f"/volumes/{volume_id}")).json()["volume"]
            if body["migration_status"] in ("success", "error"):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"volume {volume_id} is still migrating")


def copying_swap(driver: Any, volumes: Path) -> Any:
    """The fake hypervisor's swap, copying the guest's disk as QEMU's block mirror does
    (through the backends' files: the fake host attaches by export, not by path)."""
    original = driver.swap_volume

    def data(volume_id: str) -> Path:
        (path,) = volumes.glob(f"*/volume-{volume_id}.*")
        return path

    async def swap(spec: InstanceSpec, old: BlockDevice, new: BlockDevice, size: int) -> None:
        shutil.copyfile(data(old.volume_id), data(new.volume_id))
        await original(spec, old, new, size)

    return swap


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cloud(tmp_path_factory: Any) -> AsyncIterator[MigrationCloud]:
    settings = make_settings(tmp_path_factory.mktemp("migrate"), port=8000)
    settings.services = ["identity", "image", "network", "placement", "volume", "compute"]
    settings.compute.fake_hosts = 1
    settings.compute.report_interval = 1.0
    settings.volume.report_interval = 1.0
    settings.volume.backends = [
        VolumeBackendSettings(name="file"),
        VolumeBackendSettings(name="file2"),
    ]
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = MigrationCloud(instance, client)
    cloud.admin = await cloud.token()
    for backend in ("file", "file2"):
        body = {"volume_type": {"name": f"on-{backend}",
                                "extra_specs": {"volume_backend_name": backend}}}  # fmt: skip
        assert (await cloud.v3("POST", "/types", json=body)).status_code == 200
    image = await cloud.call("POST", "/image/v2/images", cloud.admin, json={
        "name": "img", "disk_format": "raw", "container_format": "bare"})  # fmt: skip
    await cloud.call("PUT", f"/image/v2/images/{image.json()['id']}/file", cloud.admin,
                     content=b"\0" * 4096,
                     headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    for _ in range(200):
        providers = await cloud.call("GET", "/placement/resource_providers", cloud.admin)
        if len(providers.json()["resource_providers"]) == 1:
            break
        await asyncio.sleep(0.05)
    body = {"name": "s1", "imageRef": image.json()["id"], "flavorRef": "1", "networks": "none"}
    created = await cloud.nova("POST", "/servers", json={"server": body})
    assert created.status_code == 202, created.text
    cloud.server_id = created.json()["server"]["id"]
    for _ in range(500):
        server = (await cloud.nova("GET", f"/servers/{cloud.server_id}")).json()["server"]
        if server["status"] != "BUILD":
            break
        await asyncio.sleep(0.02)
    assert server["status"] == "ACTIVE"
    (agent,) = instance.units["compute"].agents  # type: ignore[attr-defined]
    agent.driver.swap_volume = copying_swap(agent.driver, settings.data_dir / "volumes")
    try:
        yield cloud
    finally:
        await client.aclose()
        await instance.stop()


def read(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(len(DATA))


async def check_moved(cloud: MigrationCloud, volume: dict[str, Any], backend: str) -> None:
    """The volume keeps its id, attachment and data; it now lives on ``backend`` only."""
    messages = (await cloud.v3("GET", "/messages")).json()["messages"]
    assert volume["migration_status"] == "success", messages
    assert volume["status"] == "in-use" and volume["os-vol-host-attr:host"].split("#")[0].endswith(
        f"@{backend}"
    )
    # Compute ends the old attachment just after the completion: wait for that.
    for _ in range(200):
        volume = (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"]
        if len(volume["attachments"]) == 1:
            break
        await asyncio.sleep(0.05)
    assert volume["status"] == "in-use"
    assert [a["server_id"] for a in volume["attachments"]] == [cloud.server_id]
    assert read(cloud.path_of(volume["id"], backend)) == DATA
    other = "file" if backend == "file2" else "file2"
    data_dir = cloud.cloud.settings.data_dir / "volumes" / other
    assert not list(data_dir.glob(f"volume-{volume['id']}.*"))
    listed = (await cloud.v3("GET", "/volumes/detail?all_tenants=1")).json()["volumes"]
    assert {v["id"] for v in listed if v["name"] == volume["name"]} == {volume["id"]}
    path = f"/servers/{cloud.server_id}/os-volume_attachments"
    attachments = (await cloud.nova("GET", path)).json()["volumeAttachments"]
    assert volume["id"] in [a["volumeId"] for a in attachments]


def backend_name(volume: dict[str, Any]) -> str:
    return str(volume["os-vol-host-attr:host"]).split("#")[0].partition("@")[2]


def elsewhere(volume: dict[str, Any]) -> tuple[str, str]:
    """The other backend than the volume's: its host and its name."""
    machine = volume["os-vol-host-attr:host"].partition("@")[0]
    other = "file" if backend_name(volume) == "file2" else "file2"
    return f"{machine}@{other}", other


async def test_migrate_in_use_volume(cloud: MigrationCloud) -> None:
    volume = await cloud.attached()
    host, backend = elsewhere(volume)
    body = {"os-migrate_volume": {"host": host}}
    moved = await cloud.v3("POST", f"/volumes/{volume['id']}/action", json=body)
    assert moved.status_code == 202, moved.text
    await check_moved(cloud, await cloud.migrated(volume["id"]), backend)


async def test_retype_in_use_volume_on_demand(cloud: MigrationCloud) -> None:
    volume = await cloud.attached("on-file")
    body = {"os-retype": {"new_type": "on-file2", "migration_policy": "on-demand"}}
    retyped = await cloud.v3("POST", f"/volumes/{volume['id']}/action", json=body)
    assert retyped.status_code == 202, retyped.text
    after = await cloud.migrated(volume["id"])
    await check_moved(cloud, after, "file2")
    assert after["volume_type"] == "on-file2"


async def test_failed_swap_keeps_the_original(cloud: MigrationCloud) -> None:
    volume = await cloud.attached()
    (agent,) = cloud.cloud.units["compute"].agents  # type: ignore[attr-defined]
    working = agent.driver.swap_volume

    async def broken(*_: Any) -> None:
        raise DriverError("mirror failed")

    agent.driver.swap_volume = broken
    try:
        host, _ = elsewhere(volume)
        body = {"os-migrate_volume": {"host": host}}
        assert (
            await cloud.v3("POST", f"/volumes/{volume['id']}/action", json=body)
        ).status_code == 202
        after = await cloud.migrated(volume["id"])
    finally:
        agent.driver.swap_volume = working
    assert (
        after["migration_status"] == "error"
        and after["os-vol-host-attr:host"] == volume["os-vol-host-attr:host"]
    )
    assert after["status"] == "in-use"
    assert read(cloud.path_of(volume["id"], backend_name(after))) == DATA
    listed = (await cloud.v3("GET", "/volumes/detail?all_tenants=1")).json()["volumes"]
    for _ in range(200):
        listed = (await cloud.v3("GET", "/volumes/detail?all_tenants=1")).json()["volumes"]
        if {v["id"] for v in listed if v["name"] == volume["name"]} == {volume["id"]}:
            break
        await asyncio.sleep(0.05)
    assert {v["id"] for v in listed if v["name"] == volume["name"]} == {volume["id"]}
