"""Volume-backed servers in process (compute with one fake host, block storage with a file
backend, placement): createImage snapshots the volumes into a data-less image that maps
them, a boot from that image makes its volumes from the snapshots, and a volume-backed
server claims no DISK_GB for its root disk in placement (ephemeral and swap still count)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.functional.test_compute_volume_api import VolumeComputeCloud, cloud, message

pytestmark = pytest.mark.asyncio(loop_scope="module")

__all__ = ["cloud"]  # the module-scoped cloud of the attachment tests, started anew here


async def boot(cloud: VolumeComputeCloud, version: str = "2.90", **server: Any) -> dict[str, Any]:
    body = {"name": "vb", "flavorRef": "1", "networks": "none", **server}
    created = await cloud.nova("POST", "/servers", version, json={"server": body})
    assert created.status_code == 202, created.text
    active = await cloud.wait(created.json()["server"]["id"])
    assert active["status"] == "ACTIVE", active.get("fault")
    return active


def root_from_image(image_id: str, size: int = 1, **extra: Any) -> dict[str, Any]:
    return {"uuid": image_id, "source_type": "image", "destination_type": "volume",
            "boot_index": 0, "volume_size": size, **extra}  # fmt: skip


async def devices_of(cloud: VolumeComputeCloud, server_id: str) -> dict[str, str]:
    attached = await cloud.nova("GET", f"/servers/{server_id}/os-volume_attachments")
    return {a["device"]: a["volumeId"] for a in attached.json()["volumeAttachments"]}


async def delete_server(cloud: VolumeComputeCloud, server_id: str) -> None:
    assert (await cloud.nova("DELETE", f"/servers/{server_id}")).status_code == 204
    for _ in range(500):
        if (await cloud.nova("GET", f"/servers/{server_id}")).status_code == 404:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"server {server_id} was not deleted")


PLACEMENT = {"OpenStack-API-Version": "placement 1.39"}


async def claimed(cloud: VolumeComputeCloud, server_id: str) -> dict[str, int]:
    """The resources a server holds on its host, from placement."""
    found = await cloud.call("GET", f"/placement/allocations/{server_id}", await cloud.token(),
                             headers=PLACEMENT)  # fmt: skip
    ((_, allocation),) = found.json()["allocations"].items()
    resources: dict[str, int] = allocation["resources"]
    return resources


async def snapshot_of(cloud: VolumeComputeCloud, snapshot_id: str) -> dict[str, Any]:
    found = await cloud.call(
        "GET", f"/volume/v3/{cloud.project}/snapshots/{snapshot_id}", cloud.member
    )
    assert found.status_code == 200, found.text
    snapshot: dict[str, Any] = found.json()["snapshot"]
    return snapshot


async def test_create_image_of_a_volume_backed_server(cloud: VolumeComputeCloud) -> None:
    source = await boot(cloud, block_device_mapping_v2=[
        root_from_image(cloud.image_id, delete_on_termination=True),
        {"source_type": "blank", "destination_type": "volume", "volume_size": 1,
         "tag": "data"}])  # fmt: skip
    volumes = await devices_of(cloud, source["id"])
    action = f"/servers/{source['id']}/action"

    assert "name" in message(await cloud.nova("POST", action, json={"createImage": {}}), 400)
    theirs = await cloud.nova("POST", action, token=cloud.other,
                              json={"createImage": {"name": "peek"}})  # fmt: skip
    message(theirs, 404)

    created = await cloud.nova("POST", action, "2.45", json={"createImage": {
        "name": "bfv-snap", "metadata": {"purpose": "functional"}}})  # fmt: skip
    assert created.status_code == 202, created.text
    image_id = created.json()["image_id"]
    assert created.headers["location"].endswith(f"/v2/images/{image_id}")
    image = (await cloud.call("GET", f"/image/v2/images/{image_id}", cloud.member)).json()
    assert (image["status"], image["size"], image["owner"]) == ("active", 0, cloud.project)
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert (image["bdm_v2"], image["root_device_name"]) == ("True", "/dev/vda")
    assert image["purpose"] == "functional"
    mapping = {m["device_name"]: m for m in json.loads(image["block_device_mapping"])}
    assert set(mapping) == {"/dev/vda", "/dev/vdb"}
    for device, entry in mapping.items():
        assert (entry["source_type"], entry["destination_type"]) == ("snapshot", "volume")
        assert entry["volume_size"] == 1
        snapshot = await snapshot_of(cloud, entry["snapshot_id"])
        assert (snapshot["status"], snapshot["volume_id"]) == ("available", volumes[device])
    assert (mapping["/dev/vda"]["boot_index"], mapping["/dev/vdb"]["boot_index"]) == (0, None)
    assert mapping["/dev/vda"]["delete_on_termination"] is True
    assert mapping["/dev/vdb"]["tag"] == "data"
    # The snapshots did not disturb the server: its volumes stay attached.
    for volume_id in volumes.values():
        await cloud.volume_status(volume_id, "in-use")

    # Before 2.45 the answer has no body, only the Location.
    older = await cloud.nova("POST", action, "2.44", json={"createImage": {"name": "old"}})
    assert older.status_code == 202 and not older.content, older.text
    old_id = older.headers["location"].rsplit("/", 1)[-1]
    old_image = (await cloud.call("GET", f"/image/v2/images/{old_id}", cloud.member)).json()

    # Booting from the image makes every volume from its snapshot (the image's tags are no
    # request's: a microversion before tags takes them).
    by_ref = await boot(cloud, "2.37", imageRef=image_id)
    assert by_ref["image"]["id"] == image_id
    assert await claimed(cloud, by_ref["id"]) == {"VCPU": 1, "MEMORY_MB": 512}
    made = await devices_of(cloud, by_ref["id"])
    assert set(made) == {"/dev/vda", "/dev/vdb"}
    for device, volume_id in made.items():
        assert volume_id not in volumes.values()
        volume = await cloud.volume_status(volume_id, "in-use")
        assert volume["snapshot_id"] == mapping[device]["snapshot_id"]
    # As the CLI's --boot-from-volume asks: the image-to-volume root gives way to the image's.
    by_bfv = await boot(cloud, block_device_mapping_v2=[root_from_image(image_id, size=2)])
    root = await cloud.volume_status((await devices_of(cloud, by_bfv["id"]))["/dev/vda"], "in-use")
    assert (root["snapshot_id"], root["size"]) == (mapping["/dev/vda"]["snapshot_id"], 1)

    # Deleting the image leaves the snapshots (Nova does not remove them either).
    for ident in (image_id, old_id):
        deleted = await cloud.call("DELETE", f"/image/v2/images/{ident}", cloud.member)
        assert deleted.status_code == 204, deleted.text
    for entry in mapping.values():
        assert (await snapshot_of(cloud, entry["snapshot_id"]))["status"] == "available"
    for entry in json.loads(old_image["block_device_mapping"]):
        assert (await snapshot_of(cloud, entry["snapshot_id"]))["status"] == "available"
    for server in (by_ref, by_bfv, source):
        await delete_server(cloud, server["id"])


async def test_failed_snapshots_leave_nothing(cloud: VolumeComputeCloud) -> None:
    admin = await cloud.token()
    source = await boot(cloud, block_device_mapping_v2=[
        root_from_image(cloud.image_id, delete_on_termination=True),
        {"source_type": "blank", "destination_type": "volume", "volume_size": 1}])  # fmt: skip
    quota = f"/volume/v3/os-quota-sets/{cloud.project}"
    cinder = {"OpenStack-API-Version": "volume 3.67"}
    listed = f"/volume/v3/{cloud.project}/snapshots"
    before = len((await cloud.call("GET", listed, cloud.member)).json()["snapshots"])
    used = before + 1  # room for the root volume's snapshot, not the data volume's
    limited = await cloud.call("PUT", quota, admin, headers=cinder,
                               json={"quota_set": {"snapshots": used}})  # fmt: skip
    assert limited.status_code == 200, limited.text
    images = len((await cloud.call("GET", "/image/v2/images", cloud.member)).json()["images"])
    try:
        refused = await cloud.nova("POST", f"/servers/{source['id']}/action", "2.45",
                                   json={"createImage": {"name": "over"}})  # fmt: skip
        assert "snapshot" in message(refused, 403).lower()
    finally:
        await cloud.call("PUT", quota, admin, headers=cinder,
                         json={"quota_set": {"snapshots": -1}})  # fmt: skip
    left = (await cloud.call("GET", listed, cloud.member)).json()["snapshots"]
    assert len(left) == before, left
    after = (await cloud.call("GET", "/image/v2/images", cloud.member)).json()["images"]
    assert len(after) == images
    await delete_server(cloud, source["id"])


async def test_volume_backed_servers_claim_no_root_disk(cloud: VolumeComputeCloud) -> None:
    admin = await cloud.token()
    flavor = await cloud.call("POST", "/compute/v2.1/flavors", admin, json={"flavor": {
        "name": "vb.disks", "ram": 64, "vcpus": 1, "disk": 5,
        "OS-FLV-EXT-DATA:ephemeral": 1, "swap": 1024}})  # fmt: skip
    assert flavor.status_code == 200, flavor.text
    flavor_id = flavor.json()["flavor"]["id"]

    async def disk_used() -> int:
        listed = await cloud.call("GET", "/placement/resource_providers", admin,
                                  headers=PLACEMENT)  # fmt: skip
        (provider,) = listed.json()["resource_providers"]
        usages = await cloud.call("GET", f"/placement/resource_providers/{provider['uuid']}"
                                  "/usages", admin, headers=PLACEMENT)  # fmt: skip
        return int(usages.json()["usages"].get("DISK_GB", 0))

    start = await disk_used()
    local = await boot(cloud, imageRef=cloud.image_id, flavorRef=flavor_id)
    # Root 5 + ephemeral 1 + swap 1 GiB on the host.
    assert await claimed(cloud, local["id"]) == {"VCPU": 1, "MEMORY_MB": 64, "DISK_GB": 7}
    assert await disk_used() == start + 7
    tiny = await boot(cloud, block_device_mapping_v2=[root_from_image(cloud.image_id)])
    assert "DISK_GB" not in await claimed(cloud, tiny["id"])
    root = [root_from_image(cloud.image_id)]
    volume_backed = await boot(cloud, flavorRef=flavor_id, block_device_mapping_v2=root)
    # The root is a volume; ephemeral and swap are still local.
    assert await claimed(cloud, volume_backed["id"]) == {"VCPU": 1, "MEMORY_MB": 64, "DISK_GB": 2}
    assert await disk_used() == start + 9
    for server in (local, tiny, volume_backed):
        await delete_server(cloud, server["id"])
    assert await disk_used() == start
