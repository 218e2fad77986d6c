"""The attachments API as compute uses it: reserve, connect (a file on this machine, NBD from
qemu-storage-daemon for other hosts), complete, detach; multiattach and QoS in the export."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.functional.volume.conftest import VolumeCloud, write_pattern

pytestmark = pytest.mark.asyncio(loop_scope="module")


def connector(host: str) -> dict[str, Any]:
    return {"host": host, "platform": "x86_64", "os_type": "linux", "multipath": False}


async def attach(cloud: VolumeCloud, volume_id: str, host: str, instance: str) -> dict[str, Any]:
    """Reserve, connect and complete, as compute does; the attachment."""
    reserved = await cloud.v3(
        "POST",
        "/attachments",
        json={"attachment": {"volume_uuid": volume_id, "instance_uuid": instance}},
    )
    assert reserved.status_code == 200, reserved.text
    attachment: dict[str, Any] = reserved.json()["attachment"]
    assert attachment["status"] == "reserved"
    updated = await cloud.v3(
        "PUT",
        f"/attachments/{attachment['id']}",
        json={"attachment": {"connector": connector(host)}},
    )
    assert updated.status_code == 200, updated.text
    done = await cloud.v3(
        "POST", f"/attachments/{attachment['id']}/action", json={"os-complete": None}
    )
    assert done.status_code == 204
    result: dict[str, Any] = updated.json()["attachment"]
    return result


async def test_local_attach_gives_the_file_and_blocks_a_second_attach(
    volume_cloud: VolumeCloud,
) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="attachable")
    here = socket.gethostname()
    attachment = await attach(cloud, volume["id"], here, "11111111-2222-3333-4444-555555555555")
    info = attachment["connection_info"]
    assert info["driver_volume_type"] == "file"
    assert info["data"]["path"] == str(
        cloud.path_of(volume["id"], volume["os-vol-host-attr:host"].rpartition("#")[2])
    )
    assert (info["data"]["format"], info["data"]["access_mode"]) == ("raw", "rw")
    shown = (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"]
    assert shown["status"] == "in-use"
    assert shown["attachments"][0]["server_id"] == "11111111-2222-3333-4444-555555555555"
    second = await cloud.v3(
        "POST", "/attachments", json={"attachment": {"volume_uuid": volume["id"]}}
    )
    assert second.status_code == 400 and "badRequest" in second.json()
    busy = await cloud.v3("DELETE", f"/volumes/{volume['id']}")
    assert busy.status_code == 400
    listed = (await cloud.v3("GET", f"/attachments?volume_id={volume['id']}")).json()["attachments"]
    assert [a["id"] for a in listed] == [attachment["id"]]
    detached = await cloud.v3("DELETE", f"/attachments/{attachment['id']}")
    assert detached.status_code == 200 and detached.json() == {"attachments": []}
    assert (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"][
        "status"
    ] == "available"
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")


@pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-storage-daemon")
async def test_remote_hosts_get_an_nbd_export(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="remote", multiattach=True)
    path = cloud.path_of(volume["id"], volume["os-vol-host-attr:host"].rpartition("#")[2])
    write_pattern(path, 0, b"onestack-nbd" * 100)
    first = await attach(
        cloud, volume["id"], "compute-far-away", "aaaaaaaa-2222-3333-4444-555555555555"
    )
    info = first["connection_info"]
    assert info["driver_volume_type"] == "nbd"
    data = info["data"]
    url = f"nbd://{data['host']}:{data['port']}/{data['name']}"
    head = await _read_nbd(url, 1200)
    assert head == b"onestack-nbd" * 100
    # Multiattach: a second host shares the same export.
    second = await attach(
        cloud, volume["id"], "compute-even-further", "bbbbbbbb-2222-3333-4444-555555555555"
    )
    assert second["connection_info"]["data"]["port"] == data["port"]
    await cloud.v3("DELETE", f"/attachments/{first['id']}")
    assert await _read_nbd(url, 12) == b"onestack-nbd"  # still served for the second host
    await cloud.v3("DELETE", f"/attachments/{second['id']}")
    for _ in range(50):
        try:
            await _read_nbd(url, 12)
        except AssertionError:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the export outlived its last attachment")
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")


async def _read_nbd(url: str, length: int) -> bytes:
    """The first ``length`` bytes of an NBD export, read by qemu-img as a remote host would."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "head.raw"
        process = await asyncio.create_subprocess_exec(
            "qemu-img",
            "dd",
            "-f",
            "raw",
            "-O",
            "raw",
            f"if={url}",
            f"of={target}",
            "count=1",
            f"bs={length}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return target.read_bytes()[:length]


async def test_qos_specs_travel_in_the_connection_info(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    qos = await cloud.v3(
        "POST",
        "/qos-specs",
        json={"qos_specs": {"name": "capped", "consumer": "front-end", "total_iops_sec": "500"}},
    )
    assert qos.status_code == 200, qos.text
    qos_id = qos.json()["qos_specs"]["id"]
    created = await cloud.v3("POST", "/types", json={"volume_type": {"name": "capped-type"}})
    type_id = created.json()["volume_type"]["id"]
    associate = await cloud.v3("GET", f"/qos-specs/{qos_id}/associate?vol_type_id={type_id}")
    assert associate.status_code == 202
    associations = (await cloud.v3("GET", f"/qos-specs/{qos_id}/associations")).json()
    assert associations["qos_associations"][0]["id"] == type_id
    in_use = await cloud.v3("DELETE", f"/qos-specs/{qos_id}")
    assert in_use.status_code == 400
    volume = await cloud.volume(volume_type="capped-type")
    attachment = await attach(
        cloud, volume["id"], socket.gethostname(), "cccccccc-2222-3333-4444-555555555555"
    )
    assert attachment["connection_info"]["data"]["qos_specs"] == {"total_iops_sec": "500"}
    bad = await cloud.v3(
        "PUT", f"/qos-specs/{qos_id}", json={"qos_specs": {"read_iops_sec": "fast"}}
    )
    assert bad.status_code == 400
    await cloud.v3("DELETE", f"/attachments/{attachment['id']}")
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")
