"""The Glance v2 API in-process: lifecycle, data, inspection, sharing, quotas, bad input."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CloudClient

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is needed to make test images"
)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def qcow2(tmp_path: Path) -> bytes:
    path = tmp_path / "disk.qcow2"
    qemu_img("create", "-f", "qcow2", str(path), "64M")
    return path.read_bytes()


@pytest.fixture
def evil_qcow2(tmp_path: Path) -> bytes:
    """A qcow2 whose backing file is a host file: the 2022 advisory's attack."""
    path = tmp_path / "evil.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(path), "1M")
    return path.read_bytes()


async def new_image(cloud: CloudClient, token: str, **body: Any) -> dict[str, Any]:
    fields = {"name": "img", "disk_format": "qcow2", "container_format": "bare", **body}
    response = await cloud.call("POST", "/image/v2/images", token, json=fields)
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location == f"http://127.0.0.1:8000/image/v2/images/{response.json()['id']}"
    return response.json()


async def upload(cloud: CloudClient, token: str, image_id: str, data: bytes, **headers: str) -> int:
    response = await cloud.call(
        "PUT",
        f"/image/v2/images/{image_id}/file",
        token,
        content=data,
        headers={"Content-Type": "application/octet-stream", **headers},
    )
    return response.status_code


async def show(cloud: CloudClient, token: str, image_id: str) -> dict[str, Any]:
    response = await cloud.call("GET", f"/image/v2/images/{image_id}", token)
    assert response.status_code == 200, response.text
    return response.json()


def stored_files(cloud: CloudClient) -> list[Path]:
    return list((cloud.cloud.settings.data_dir / "images").iterdir())


async def test_versions_schemas_and_info(cloud: CloudClient) -> None:
    versions = await cloud.http.get("/image/")
    assert versions.status_code == 300
    assert versions.json()["versions"][0]["status"] == "CURRENT"
    token = await cloud.token()
    schema = (await cloud.call("GET", "/image/v2/schemas/image", token)).json()
    assert schema["name"] == "image" and "disk_format" in schema["properties"]
    assert (await cloud.call("GET", "/image/v2/schemas/images", token)).status_code == 200
    methods = (await cloud.call("GET", "/image/v2/info/import", token)).json()
    assert methods["import-methods"]["value"] == ["glance-direct", "copy-image"]
    stores = (await cloud.call("GET", "/image/v2/info/stores", token)).json()["stores"]
    assert stores == [
        {"id": "file", "description": "Image files on this host's disk", "default": True}
    ]
    assert (await cloud.http.get("/image/v2/images")).status_code == 401


async def test_upload_download_lifecycle(cloud: CloudClient, qcow2: bytes) -> None:
    token = await cloud.token()
    image = await new_image(cloud, token, visibility="public", hw_disk_bus="scsi")
    assert image["status"] == "queued" and image["size"] is None
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["hw_disk_bus"] == "scsi"
    assert await upload(cloud, token, image["id"], qcow2) == 204
    active = await show(cloud, token, image["id"])
    assert active["status"] == "active"
    assert active["size"] == len(qcow2)
    assert active["checksum"] == hashlib.md5(qcow2).hexdigest()
    assert active["os_hash_algo"] == "sha512"
    assert active["os_hash_value"] == hashlib.sha512(qcow2).hexdigest()
    assert active["virtual_size"] == 64 * 1024 * 1024
    assert active["stores"] == "file"
    download = await cloud.call("GET", f"/image/v2/images/{image['id']}/file", token)
    assert download.status_code == 200
    assert download.content == qcow2
    assert download.headers["content-md5"] == active["checksum"]
    ranged = await cloud.call(
        "GET", f"/image/v2/images/{image['id']}/file", token, headers={"Range": "bytes=4-11"}
    )
    assert ranged.status_code == 206 and ranged.content == qcow2[4:12]
    assert ranged.headers["content-range"] == f"bytes 4-11/{len(qcow2)}"
    bad_range = await cloud.call(
        "GET", f"/image/v2/images/{image['id']}/file", token, headers={"Range": "bytes=999999-"}
    )
    assert bad_range.status_code == 416
    assert await upload(cloud, token, image["id"], qcow2) == 409
    assert (await cloud.call("DELETE", f"/image/v2/images/{image['id']}", token)).status_code == 204
    assert (await cloud.call("GET", f"/image/v2/images/{image['id']}", token)).status_code == 404
    assert stored_files(cloud) == []


async def test_queued_image_has_no_data(cloud: CloudClient) -> None:
    token = await cloud.token()
    image = await new_image(cloud, token)
    empty = await cloud.call("GET", f"/image/v2/images/{image['id']}/file", token)
    assert empty.status_code == 204


@pytest.mark.parametrize(
    "case",
    ["backing-file", "raw-declared-qcow2", "qcow2-declared-raw", "md5-mismatch", "unsafe-vmdk"],
)
async def test_unsafe_or_mismatched_uploads_are_refused(
    cloud: CloudClient, qcow2: bytes, evil_qcow2: bytes, tmp_path: Path, case: str
) -> None:
    token = await cloud.token()
    data, disk_format, headers = qcow2, "qcow2", {}
    if case == "backing-file":
        data = evil_qcow2
    elif case == "raw-declared-qcow2":
        data = b"\0" * 65536
    elif case == "qcow2-declared-raw":
        disk_format = "raw"
    elif case == "md5-mismatch":
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()}
    elif case == "unsafe-vmdk":
        descriptor = (
            b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
            b'createType="monolithicFlat"\nRW 2048 FLAT "/etc/shadow" 0\n'
        )
        data, disk_format = descriptor.ljust(4096, b"\0"), "vmdk"
    image = await new_image(cloud, token, disk_format=disk_format)
    assert await upload(cloud, token, image["id"], data, **headers) == 400
    after = await show(cloud, token, image["id"])
    assert after["status"] == "queued" and after["size"] is None
    assert stored_files(cloud) == []
    usage = await cloud.cloud.units["image"].service.quotas.usage(after["owner"])  # type: ignore[attr-defined]
    assert usage["image_size_total"]["in_use"] == 0


async def test_bad_create_requests(cloud: CloudClient) -> None:
    token = await cloud.token()
    cases = [
        ({"disk_format": "floppy"}, 400),
        ({"container_format": "box"}, 400),
        ({"visibility": "everyone"}, 400),
        ({"min_ram": -1}, 400),
        ({"protected": "yes"}, 400),
        ({"status": "active"}, 403),
        ({"os_glance_import_task": "x"}, 403),
        ({"custom": 5}, 400),
        ({"id": "not-a-uuid"}, 400),
    ]
    for body, status in cases:
        response = await cloud.call("POST", "/image/v2/images", token, json={"name": "x", **body})
        assert response.status_code == status, (body, response.text)
        error = response.json()
        assert error["code"].startswith(str(status)) and error["message"]
    bad_json = await cloud.call("POST", "/image/v2/images", token, content=b"{nope")
    assert bad_json.status_code == 400
    fixed = "7b9b5a1c-8f0e-4b1a-9d3e-1f2a3b4c5d6e"
    assert (await new_image(cloud, token, id=fixed))["id"] == fixed
    again = await cloud.call("POST", "/image/v2/images", token, json={"id": fixed})
    assert again.status_code == 409


async def test_json_patch(cloud: CloudClient) -> None:
    token = await cloud.token()
    image = await new_image(cloud, token)
    path = f"/image/v2/images/{image['id']}"
    patched = await cloud.call(
        "PATCH",
        path,
        token,
        headers=PATCH,
        json=[
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
            {"op": "add", "path": "/min_ram", "value": 256},
            {"op": "replace", "path": "/tags", "value": ["a", "b"]},
        ],
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["hw_disk_bus"], body["min_ram"], body["tags"]) == (
        "renamed",
        "virtio",
        256,
        ["a", "b"],
    )
    removed = await cloud.call(
        "PATCH", path, token, headers=PATCH, json=[{"op": "remove", "path": "/hw_disk_bus"}]
    )
    assert "hw_disk_bus" not in removed.json()
    refused = [
        ([{"op": "replace", "path": "/status", "value": "active"}], 403),
        ([{"op": "replace", "path": "/checksum", "value": "x"}], 403),
        ([{"op": "add", "path": "/os_glance_x", "value": "1"}], 403),
        ([{"op": "remove", "path": "/missing"}], 409),
        ([{"op": "move", "path": "/name"}], 400),
        ([{"op": "add", "path": "/locations/-", "value": {}}], 403),
        ({"op": "add"}, 400),
    ]
    for operations, status in refused:
        response = await cloud.call("PATCH", path, token, headers=PATCH, json=operations)
        assert response.status_code == status, (operations, response.text)
    wrong_type = await cloud.call("PATCH", path, token, json=[])
    assert wrong_type.status_code == 415
    tag = await cloud.call("PUT", f"{path}/tags/c", token)
    assert tag.status_code == 204
    assert (await show(cloud, token, image["id"]))["tags"] == ["a", "b", "c"]
    assert (await cloud.call("DELETE", f"{path}/tags/zzz", token)).status_code == 404


async def test_tenancy_visibility_and_sharing(cloud: CloudClient, qcow2: bytes) -> None:
    admin = await cloud.token()
    project_a, alice = await cloud.project_member(admin, "alpha")
    project_b, bob = await cloud.project_member(admin, "beta")
    private = await new_image(cloud, alice, name="private", visibility="private")
    assert private["owner"] == project_a
    public_try = await cloud.call(
        "POST", "/image/v2/images", alice, json={"name": "p", "visibility": "public"}
    )
    assert public_try.status_code == 403
    assert (await cloud.call("GET", f"/image/v2/images/{private['id']}", bob)).status_code == 404
    names = [i["name"] for i in (await cloud.call("GET", "/image/v2/images", bob)).json()["images"]]
    assert "private" not in names
    shared = await new_image(cloud, alice, name="shared", visibility="shared")
    await upload(cloud, alice, shared["id"], qcow2)
    members = f"/image/v2/images/{shared['id']}/members"
    added = await cloud.call("POST", members, alice, json={"member": project_b})
    assert added.status_code == 200 and added.json()["status"] == "pending"
    assert (await cloud.call("POST", members, alice, json={"member": project_b})).status_code == 409
    listing = (await cloud.call("GET", "/image/v2/images", bob)).json()["images"]
    assert "shared" not in [i["name"] for i in listing]  # pending: not listed yet
    pending = await cloud.call("GET", "/image/v2/images?member_status=pending", bob)
    assert "shared" in [i["name"] for i in pending.json()["images"]]
    owner_accepts = await cloud.call(
        "PUT", f"{members}/{project_b}", alice, json={"status": "accepted"}
    )
    assert owner_accepts.status_code == 403
    accepted = await cloud.call("PUT", f"{members}/{project_b}", bob, json={"status": "accepted"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    listing = (await cloud.call("GET", "/image/v2/images", bob)).json()["images"]
    assert "shared" in [i["name"] for i in listing]
    download = await cloud.call("GET", f"/image/v2/images/{shared['id']}/file", bob)
    assert download.content == qcow2
    assert (await cloud.call("DELETE", f"/image/v2/images/{shared['id']}", bob)).status_code == 403
    not_shared = await cloud.call(
        "POST", f"/image/v2/images/{private['id']}/members", alice, json={"member": project_b}
    )
    assert not_shared.status_code == 403
    assert (await cloud.call("DELETE", f"{members}/{project_b}", alice)).status_code == 204
    assert (await cloud.call("GET", f"/image/v2/images/{shared['id']}", bob)).status_code == 404
    admin_view = (await cloud.call("GET", "/image/v2/images", admin)).json()["images"]
    assert {"private", "shared"} <= {i["name"] for i in admin_view}


async def test_protected_deactivated_and_community(cloud: CloudClient, qcow2: bytes) -> None:
    admin = await cloud.token()
    _, alice = await cloud.project_member(admin, "gamma")
    image = await new_image(cloud, alice, protected=True, visibility="community")
    await upload(cloud, alice, image["id"], qcow2)
    path = f"/image/v2/images/{image['id']}"
    assert (await cloud.call("DELETE", path, alice)).status_code == 403
    # As Glance's defaults: the owner's members and admins deactivate, nobody else.
    _, stranger = await cloud.project_member(admin, "epsilon")
    assert (await cloud.call("POST", f"{path}/actions/deactivate", stranger)).status_code == 403
    assert (await cloud.call("POST", f"{path}/actions/deactivate", alice)).status_code == 204
    assert (await show(cloud, alice, image["id"]))["status"] == "deactivated"
    assert (await cloud.call("GET", f"{path}/file", alice)).status_code == 403
    assert (await cloud.call("GET", f"{path}/file", admin)).status_code == 200
    assert (await cloud.call("POST", f"{path}/actions/reactivate", admin)).status_code == 204
    _, other = await cloud.project_member(admin, "delta")
    default_list = (await cloud.call("GET", "/image/v2/images", other)).json()["images"]
    assert image["id"] not in [i["id"] for i in default_list]
    community = await cloud.call("GET", "/image/v2/images?visibility=community", other)
    assert image["id"] in [i["id"] for i in community.json()["images"]]
    await cloud.call(
        "PATCH",
        path,
        alice,
        headers=PATCH,
        json=[{"op": "replace", "path": "/protected", "value": False}],
    )
    assert (await cloud.call("DELETE", path, alice)).status_code == 204


async def test_quotas(cloud: CloudClient, qcow2: bytes) -> None:
    admin = await cloud.token()
    project, alice = await cloud.project_member(admin, "quota")
    quotas = cloud.cloud.units["image"].service.quotas  # type: ignore[attr-defined]
    await quotas.set_limits(project, {"image_count_total": 1, "image_size_total": 0})
    image = await new_image(cloud, alice)
    second = await cloud.call("POST", "/image/v2/images", alice, json={"name": "two"})
    assert second.status_code == 413 and "image_count_total" in second.json()["message"]
    assert await upload(cloud, alice, image["id"], qcow2) == 413
    assert (await show(cloud, alice, image["id"]))["status"] == "queued"
    await quotas.set_limits(project, {"image_size_total": 1})
    assert await upload(cloud, alice, image["id"], qcow2) == 204
    assert (await quotas.usage(project))["image_size_total"]["in_use"] == 1
    await cloud.call("DELETE", f"/image/v2/images/{image['id']}", alice)
    usage = await quotas.usage(project)
    assert usage["image_size_total"]["in_use"] == 0 and usage["image_count_total"]["in_use"] == 0


async def test_stage_and_import(cloud: CloudClient, qcow2: bytes) -> None:
    token = await cloud.token()
    image = await new_image(cloud, token)
    path = f"/image/v2/images/{image['id']}"
    early = await cloud.call(
        "POST", f"{path}/import", token, json={"method": {"name": "glance-direct"}}
    )
    assert early.status_code == 409
    staged = await cloud.call(
        "PUT",
        f"{path}/stage",
        token,
        content=qcow2,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert staged.status_code == 204
    assert (await show(cloud, token, image["id"]))["status"] == "uploading"
    imported = await cloud.call(
        "POST", f"{path}/import", token, json={"method": {"name": "glance-direct"}}
    )
    assert imported.status_code == 202
    for _ in range(100):
        if (await show(cloud, token, image["id"]))["status"] == "active":
            break
        await asyncio.sleep(0.05)
    final = await show(cloud, token, image["id"])
    assert final["status"] == "active" and final["checksum"] == hashlib.md5(qcow2).hexdigest()
    web = await cloud.call(
        "POST",
        f"{path}/import",
        token,
        json={"method": {"name": "web-download", "uri": "http://x"}},
    )
    assert web.status_code == 400 and "outbound network" in web.json()["message"]
    copy = await cloud.call(
        "POST", f"{path}/import", token, json={"method": {"name": "copy-image"}, "stores": ["file"]}
    )
    assert copy.status_code == 409


async def test_list_filters_sorting_and_paging(cloud: CloudClient, qcow2: bytes) -> None:
    token = await cloud.token()
    created = []
    for i in range(5):
        image = await new_image(cloud, token, name=f"page-{i}", tags=["even"] if i % 2 == 0 else [])
        created.append(image["id"])
    await upload(cloud, token, created[0], qcow2)
    seen: list[str] = []
    url = "/image/v2/images?limit=2&sort_key=name&sort_dir=asc"
    while url:
        body = (
            await cloud.call("GET", f"/image{url}" if url.startswith("/v2") else url, token)
        ).json()
        seen += [i["name"] for i in body["images"]]
        url = body.get("next", "")
    assert seen == [f"page-{i}" for i in range(5)]
    by_tag = (await cloud.call("GET", "/image/v2/images?tag=even", token)).json()["images"]
    assert sorted(i["name"] for i in by_tag) == ["page-0", "page-2", "page-4"]
    active = (await cloud.call("GET", "/image/v2/images?status=active", token)).json()["images"]
    assert [i["id"] for i in active] == [created[0]]
    sized = await cloud.call("GET", f"/image/v2/images?size_min={len(qcow2)}", token)
    assert [i["id"] for i in sized.json()["images"]] == [created[0]]
    names = await cloud.call("GET", "/image/v2/images?name=in:page-1,page-3", token)
    assert sorted(i["name"] for i in names.json()["images"]) == ["page-1", "page-3"]
    newer = await cloud.call("GET", "/image/v2/images?created_at=gte:2000-01-01T00:00:00Z", token)
    assert len(newer.json()["images"]) == 5
    assert (
        await cloud.call("GET", "/image/v2/images?created_at=xx:2000", token)
    ).status_code == 400
    assert (await cloud.call("GET", "/image/v2/images?marker=missing", token)).status_code == 404
    assert (await cloud.call("GET", "/image/v2/images?sort_key=bogus", token)).status_code == 400


async def test_quotas_from_unified_limits(cloud: CloudClient) -> None:
    admin = await cloud.token()
    project, alice = await cloud.project_member(admin, "limited")
    services = await cloud.call("GET", "/identity/v3/services?type=image", admin)
    glance = services.json()["services"][0]["id"]
    registered = {"service_id": glance, "resource_name": "image_count_total", "default_limit": 100}
    await cloud.call(
        "POST", "/identity/v3/registered_limits", admin, json={"registered_limits": [registered]}
    )
    own = {
        "service_id": glance,
        "project_id": project,
        "resource_name": "image_count_total",
        "resource_limit": 1,
    }
    await cloud.call("POST", "/identity/v3/limits", admin, json={"limits": [own]})
    await new_image(cloud, alice)
    second = await cloud.call("POST", "/image/v2/images", alice, json={"name": "two"})
    assert second.status_code == 413 and "image_count_total" in second.json()["message"]
