"""``os-volume_attachments`` and boot-from-volume mappings in process (compute with one fake
host, block storage with a file backend): Nova's shapes per microversion, bad input,
tenancy, and ``volumes_attached`` in server bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from onestack.cloud import Cloud
from onestack.compute.drivers.base import DriverError
from onestack.core.config import VolumeBackendSettings
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

V21 = "/compute/v2.1"


class VolumeComputeCloud(CloudClient):
    admin: str = ""
    member: str = ""
    project: str = ""
    other: str = ""
    other_project: str = ""
    image_id: str = ""
    server_id: str = ""

    async def nova(self, method: str, path: str, version: str = "2.90",
                   token: str | None = None, **kw: Any) -> httpx.Response:  # fmt: skip
        headers = {"OpenStack-API-Version": f"compute {version}"}
        return await self.call(method, f"{V21}{path}", token or self.member, headers=headers, **kw)

    async def volume(self, token: str | None = None, project: str | None = None) -> str:
        """A new available 1 GiB volume of the member's (or the given) project."""
        token, project = token or self.member, project or self.project
        created = await self.call("POST", f"/volume/v3/{project}/volumes", token,
                                  json={"volume": {"size": 1}})  # fmt: skip
        assert created.status_code == 202, created.text
        volume_id: str = created.json()["volume"]["id"]
        await self.volume_status(volume_id, "available", token, project)
        return volume_id

    async def volume_status(self, volume_id: str, status: str, token: str | None = None,
                            project: str | None = None) -> dict[str, Any]:  # fmt: skip
        token, project = token or self.member, project or self.project
        for _ in range(500):
            found = await self.call("GET", f"/volume/v3/{project}/volumes/{volume_id}", token)
            volume: dict[str, Any] = found.json()["volume"]
            if volume["status"] == status:
                return volume
            await asyncio.sleep(0.02)
        raise AssertionError(f"volume {volume_id} is {volume['status']}, not {status}")

    async def wait(self, server_id: str) -> dict[str, Any]:
        for _ in range(500):
            found = await self.nova("GET", f"/servers/{server_id}")
            server: dict[str, Any] = found.json()["server"]
            if server["status"] != "BUILD":
                return server
            await asyncio.sleep(0.02)
        raise AssertionError(f"server {server_id} still building")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cloud(tmp_path_factory: Any) -> AsyncIterator[VolumeComputeCloud]:
    settings = make_settings(tmp_path_factory.mktemp("computevol"), port=8000)
    settings.services = ["identity", "image", "network", "placement", "volume", "compute"]
    settings.compute.fake_hosts = 1
    settings.compute.report_interval = 1.0
    settings.volume.report_interval = 1.0
    settings.volume.backends = [VolumeBackendSettings(name="file")]
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = VolumeComputeCloud(instance, client)
    admin = cloud.admin = await cloud.token()
    cloud.project, cloud.member = await cloud.project_member(admin, "tenant1")
    cloud.other_project, cloud.other = await cloud.project_member(admin, "tenant2")
    image = await cloud.call("POST", "/image/v2/images", admin, json={
        "name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public",
    })  # fmt: skip
    cloud.image_id = image.json()["id"]
    await cloud.call("PUT", f"/image/v2/images/{cloud.image_id}/file", admin,
                     content=b"\0" * 4096,
                     headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    for _ in range(200):
        providers = await cloud.call("GET", "/placement/resource_providers", admin)
        if len(providers.json()["resource_providers"]) == 1:
            break
        await asyncio.sleep(0.05)
    body = {"name": "s1", "imageRef": cloud.image_id, "flavorRef": "1", "networks": "none"}
    created = await cloud.nova("POST", "/servers", json={"server": body})
    assert created.status_code == 202, created.text
    cloud.server_id = created.json()["server"]["id"]
    assert (await cloud.wait(cloud.server_id))["status"] == "ACTIVE"
    try:
        yield cloud
    finally:
        await client.aclose()
        await instance.stop()


def message(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    (body,) = response.json().values()
    text: str = body["message"]
    return text


async def test_attach_shapes_per_microversion(cloud: VolumeComputeCloud) -> None:
    volume_id = await cloud.volume()
    path = f"/servers/{cloud.server_id}/os-volume_attachments"
    early = await cloud.nova("POST", path, "2.48", json={"volumeAttachment": {
        "volumeId": volume_id, "tag": "data"}})  # fmt: skip
    assert "tag" in message(early, 400)
    attached = await cloud.nova("POST", path, "2.79", json={"volumeAttachment": {
        "volumeId": volume_id, "tag": "data", "delete_on_termination": True}})  # fmt: skip
    assert attached.status_code == 200, attached.text
    assert attached.json()["volumeAttachment"] == {
        "device": "/dev/vdb", "id": volume_id, "serverId": cloud.server_id,
        "volumeId": volume_id, "tag": "data", "delete_on_termination": True,
    }  # fmt: skip
    await cloud.volume_status(volume_id, "in-use")

    old = (await cloud.nova("GET", path, "2.1")).json()["volumeAttachments"]
    assert old == [{"device": "/dev/vdb", "id": volume_id, "serverId": cloud.server_id,
                    "volumeId": volume_id}]  # fmt: skip
    (newest,) = (await cloud.nova("GET", path, "2.89")).json()["volumeAttachments"]
    assert "id" not in newest and newest["tag"] == "data"
    assert newest["attachment_id"] and newest["bdm_uuid"]
    one = await cloud.nova("GET", f"{path}/{volume_id}", "2.70")
    assert one.json()["volumeAttachment"]["tag"] == "data"
    assert "delete_on_termination" not in one.json()["volumeAttachment"]

    server = (await cloud.nova("GET", f"/servers/{cloud.server_id}", "2.1")).json()["server"]
    assert server["os-extended-volumes:volumes_attached"] == [{"id": volume_id}]
    detail = (await cloud.nova("GET", "/servers/detail", "2.3")).json()["servers"]
    assert detail[0]["os-extended-volumes:volumes_attached"] == [
        {"id": volume_id, "delete_on_termination": True}
    ]

    # 2.85 changes delete_on_termination in place; swapping volumes is the admin's.
    too_early = await cloud.nova("PUT", f"{path}/{volume_id}", "2.84",
                                 json={"volumeAttachment": {"volumeId": volume_id}})  # fmt: skip
    message(too_early, 400)
    updated = await cloud.nova("PUT", f"{path}/{volume_id}", "2.85", json={"volumeAttachment": {
        "volumeId": volume_id, "delete_on_termination": False}})  # fmt: skip
    assert updated.status_code == 202, updated.text
    shown = await cloud.nova("GET", f"{path}/{volume_id}", "2.85")
    assert shown.json()["volumeAttachment"]["delete_on_termination"] is False
    other_volume = await cloud.volume()
    swap = await cloud.nova("PUT", f"{path}/{volume_id}", "2.85",
                            json={"volumeAttachment": {"volumeId": other_volume}})  # fmt: skip
    message(swap, 403)

    detached = await cloud.nova("DELETE", f"{path}/{volume_id}")
    assert detached.status_code == 202, detached.text
    await cloud.volume_status(volume_id, "available")
    for _ in range(200):
        if not (await cloud.nova("GET", path)).json()["volumeAttachments"]:
            break
        await asyncio.sleep(0.02)
    assert (await cloud.nova("GET", path)).json()["volumeAttachments"] == []
    assert "not found" in message(await cloud.nova("DELETE", f"{path}/{volume_id}"), 404)


async def test_bad_attach_requests(cloud: VolumeComputeCloud) -> None:
    path = f"/servers/{cloud.server_id}/os-volume_attachments"
    assert "volumeId" in message(await cloud.nova("POST", path, json={"volumeAttachment": {}}), 400)
    missing = await cloud.nova("POST", path, json={"volumeAttachment": {
        "volumeId": "8e5c1a7c-0000-4000-8000-000000000000"}})  # fmt: skip
    assert "could not be found" in message(missing, 404)
    # Another project's volume is not found; another project's server neither.
    theirs = await cloud.volume(cloud.other, cloud.other_project)
    foreign = await cloud.nova("POST", path, json={"volumeAttachment": {"volumeId": theirs}})
    assert "could not be found" in message(foreign, 404)
    mine = await cloud.volume()
    peek = await cloud.nova("POST", path, token=cloud.other,
                            json={"volumeAttachment": {"volumeId": mine}})  # fmt: skip
    message(peek, 404)
    assert (await cloud.nova("GET", path, token=cloud.other)).status_code == 404


async def test_boot_from_volume_mappings(cloud: VolumeComputeCloud) -> None:
    def server(**extra: Any) -> dict[str, Any]:
        return {"server": {"name": "bfv", "flavorRef": "1", "networks": "none", **extra}}

    no_size = await cloud.nova("POST", "/servers", json=server(block_device_mapping_v2=[{
        "uuid": cloud.image_id, "source_type": "image", "destination_type": "volume",
        "boot_index": 0}]))  # fmt: skip
    assert "volume_size" in message(no_size, 400)
    no_boot = await cloud.nova("POST", "/servers", json=server(block_device_mapping_v2=[{
        "source_type": "blank", "destination_type": "volume", "volume_size": 1}]))  # fmt: skip
    assert "imageRef" in message(no_boot, 400)
    theirs = await cloud.volume(cloud.other, cloud.other_project)
    foreign = await cloud.nova("POST", "/servers", json=server(block_device_mapping_v2=[{
        "uuid": theirs, "source_type": "volume", "destination_type": "volume",
        "boot_index": 0}]))  # fmt: skip
    message(foreign, 404)

    booted = await cloud.nova("POST", "/servers", json=server(block_device_mapping_v2=[{
        "uuid": cloud.image_id, "source_type": "image", "destination_type": "volume",
        "boot_index": 0, "volume_size": 1, "delete_on_termination": True}, {
        "source_type": "blank", "destination_type": "volume", "volume_size": 1}]))  # fmt: skip
    assert booted.status_code == 202, booted.text
    server_id = booted.json()["server"]["id"]
    active = await cloud.wait(server_id)
    assert active["status"] == "ACTIVE", active.get("fault")
    assert active["image"] == ""
    attached = await cloud.nova("GET", f"/servers/{server_id}/os-volume_attachments")
    devices = {a["device"]: a["volumeId"] for a in attached.json()["volumeAttachments"]}
    assert set(devices) == {"/dev/vda", "/dev/vdb"}
    root = await cloud.volume_status(devices["/dev/vda"], "in-use")
    assert root["bootable"] == "true"
    await cloud.volume_status(devices["/dev/vdb"], "in-use")
    in_use = await cloud.nova("POST", "/servers", json=server(block_device_mapping_v2=[{
        "uuid": devices["/dev/vdb"], "source_type": "volume", "destination_type": "volume",
        "boot_index": 0}]))  # fmt: skip
    assert "Invalid volume" in message(in_use, 400)
    root_detach = await cloud.nova(
        "DELETE", f"/servers/{server_id}/os-volume_attachments/{devices['/dev/vda']}"
    )
    assert "root device" in message(root_detach, 400)

    assert (await cloud.nova("DELETE", f"/servers/{server_id}")).status_code == 204
    await cloud.volume_status(devices["/dev/vdb"], "available")
    for _ in range(500):
        gone = await cloud.call(
            "GET", f"/volume/v3/{cloud.project}/volumes/{devices['/dev/vda']}", cloud.member
        )
        if gone.status_code == 404:
            break
        await asyncio.sleep(0.02)
    assert gone.status_code == 404, gone.text


async def test_swap_volume(cloud: VolumeComputeCloud) -> None:
    path = f"/servers/{cloud.server_id}/os-volume_attachments"
    old = await cloud.volume()
    attached = await cloud.nova("POST", path, json={"volumeAttachment": {"volumeId": old}})
    assert attached.status_code == 200, attached.text
    await cloud.volume_status(old, "in-use")
    bigger = await cloud.call("POST", f"/volume/v3/{cloud.project}/volumes", cloud.member,
                              json={"volume": {"size": 2}})  # fmt: skip
    new = bigger.json()["volume"]["id"]
    await cloud.volume_status(new, "available")

    async def swap(volume_id: str, to: str, token: str | None = None) -> httpx.Response:
        return await cloud.nova("PUT", f"{path}/{volume_id}", "2.1", token=token or cloud.admin,
                                json={"volumeAttachment": {"volumeId": to}})  # fmt: skip

    assert (await swap(old, new, cloud.member)).status_code == 403
    missing = "8e5c1a7c-0000-4000-8000-000000000000"
    assert "could not be found" in message(await swap(old, missing), 400)
    assert "not found" in message(await swap(missing, new), 404)
    theirs = await cloud.volume(cloud.other, cloud.other_project)
    assert "could not be found" in message(await swap(old, theirs), 400)
    in_use = await cloud.volume()
    await cloud.nova("POST", path, json={"volumeAttachment": {"volumeId": in_use}})
    await cloud.volume_status(in_use, "in-use")
    assert "must be available" in message(await swap(old, in_use), 400)

    # The hypervisor fails the copy: the new volume's attachment goes, the old one stays.
    (agent,) = cloud.cloud.units["compute"].agents  # type: ignore[attr-defined]

    async def broken(*_: Any) -> None:
        raise DriverError("mirror failed")

    agent.driver.swap_volume = broken
    try:
        # The 202 comes with the new volume reserved; it is available again once it failed.
        assert (await swap(old, new)).status_code == 202
        await cloud.volume_status(new, "available")
    finally:
        del agent.driver.swap_volume
    for _ in range(200):
        attachments = (await cloud.nova("GET", path)).json()["volumeAttachments"]
        if old in [a["volumeId"] for a in attachments]:
            break
        await asyncio.sleep(0.02)
    assert old in [a["volumeId"] for a in attachments]
    await cloud.volume_status(old, "in-use")

    swapped = await swap(old, new)
    assert swapped.status_code == 202, swapped.text
    await cloud.volume_status(old, "available")
    await cloud.volume_status(new, "in-use")
    attachments = (await cloud.nova("GET", path)).json()["volumeAttachments"]
    assert {a["volumeId"]: a["device"] for a in attachments} == {
        new: "/dev/vdb", in_use: "/dev/vdc"}  # fmt: skip
    guest = agent.driver.guests[cloud.server_id]
    assert set(guest.volumes) == {new, in_use} and guest.volume_sizes[new] == 2 << 30
    actions = (await cloud.nova("GET", f"/servers/{cloud.server_id}/os-instance-actions",
                                token=cloud.admin)).json()["instanceActions"]  # fmt: skip
    assert actions[0]["action"] == "swap_volume"
    # Back to a smaller volume: refused; the one it left is reusable.
    assert "same size or larger" in message(await swap(new, old), 400)
    for volume_id in (new, in_use):
        assert (await cloud.nova("DELETE", f"{path}/{volume_id}")).status_code == 202
        await cloud.volume_status(volume_id, "available")
