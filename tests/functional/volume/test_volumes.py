"""Cinder volumes in-process: discovery, lifecycle on the file backend, bad input, tenancy."""

from __future__ import annotations

import os

import pytest

from tests.functional.volume.conftest import GIB, V3, VolumeCloud

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_discovery_and_microversions(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    root = await cloud.http.get("/volume/")
    assert root.status_code == 300
    [version] = root.json()["versions"]
    assert (version["id"], version["min_version"], version["version"]) == ("v3.0", "3.0", "3.70")
    assert (await cloud.http.get("/volume/v3/")).status_code == 200
    token = cloud.admin
    answered = await cloud.call(
        "GET", f"{V3}/volumes", token, headers={"OpenStack-API-Version": "volume 3.60"}
    )
    assert answered.headers["OpenStack-API-Version"] == "volume 3.60"
    too_new = await cloud.call(
        "GET", f"{V3}/volumes", token, headers={"OpenStack-API-Version": "volume 3.99"}
    )
    assert too_new.status_code == 406 and "notAcceptable" in too_new.json()
    # With and without the project in the URL; another project's id in the URL is refused.
    catalog_path = f"{V3}/{cloud.cloud.units['volume'].service.host}/volumes"  # not a project
    assert (await cloud.call("GET", catalog_path, token)).status_code == 400
    project = (
        await cloud.call(
            "GET", "/identity/v3/auth/tokens", token, headers={"X-Subject-Token": token}
        )
    ).json()["token"]["project"]["id"]
    assert (await cloud.call("GET", f"{V3}/{project}/volumes", token)).status_code == 200
    assert (await cloud.call("GET", f"{V3}/volumes", "bad-token")).status_code == 401


async def test_volume_lifecycle_on_the_file_backend(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    created = await cloud.v3(
        "POST",
        "/volumes",
        json={
            "volume": {
                "size": 1,
                "name": "vol1",
                "description": "first",
                "metadata": {"tier": "gold"},
            }
        },
    )
    assert created.status_code == 202
    body = created.json()["volume"]
    assert (body["status"], body["size"], body["volume_type"]) == ("creating", 1, "__DEFAULT__")
    assert body["bootable"] == "false" and body["consumes_quota"] is True
    volume = await cloud.wait("volume", body["id"], ("available",))
    assert volume["os-vol-host-attr:host"].endswith("#file") or volume[
        "os-vol-host-attr:host"
    ].endswith("#file2")
    backend = volume["os-vol-host-attr:host"].rpartition("#")[2]
    path = cloud.path_of(volume["id"], backend)
    assert path.stat().st_size == GIB and path.stat().st_blocks == 0  # thin: nothing allocated
    listed = (await cloud.v3("GET", "/volumes?name=vol1")).json()["volumes"]
    assert [v["id"] for v in listed] == [volume["id"]] and set(listed[0]) == {"id", "name", "links"}
    by_meta = await cloud.v3("GET", "/volumes/detail", params={"metadata": "{'tier': 'gold'}"})
    assert [v["id"] for v in by_meta.json()["volumes"]] == [volume["id"]]
    updated = await cloud.v3(
        "PUT", f"/volumes/{volume['id']}", json={"volume": {"name": "renamed"}}
    )
    assert updated.json()["volume"]["name"] == "renamed"
    meta = await cloud.v3(
        "POST", f"/volumes/{volume['id']}/metadata", json={"metadata": {"a": "1"}}
    )
    assert meta.json()["metadata"] == {"tier": "gold", "a": "1"}
    key = await cloud.v3("GET", f"/volumes/{volume['id']}/metadata/a")
    assert key.json() == {"meta": {"a": "1"}}
    assert (await cloud.v3("DELETE", f"/volumes/{volume['id']}/metadata/a")).status_code == 200
    summary = (await cloud.v3("GET", "/volumes/summary")).json()["volume-summary"]
    assert summary["total_count"] >= 1 and "tier" in summary["metadata"]
    assert (await cloud.v3("DELETE", f"/volumes/{volume['id']}")).status_code == 202
    await cloud.gone("volume", volume["id"])
    assert not path.exists()


async def test_paging_sorting_and_count(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    _, token = await cloud.project_member(cloud.admin, "pager")
    ids = [(await cloud.volume(token, name=f"page{i}"))["id"] for i in range(3)]
    first = await cloud.v3("GET", "/volumes/detail?limit=2&sort=name:asc&with_count=true", token)
    page = first.json()
    assert [v["name"] for v in page["volumes"]] == ["page0", "page1"] and page["count"] == 3
    follow = page["volumes_links"][0]["href"].split("/v3", 1)[1]
    rest = (await cloud.v3("GET", follow, token)).json()
    assert [v["name"] for v in rest["volumes"]] == ["page2"] and "volumes_links" not in rest
    bad_sort = await cloud.v3("GET", "/volumes?sort=nope:asc", token)
    assert bad_sort.status_code == 400 and "badRequest" in bad_sort.json()
    for volume_id in ids:
        await cloud.v3("DELETE", f"/volumes/{volume_id}", token)


@pytest.mark.parametrize("size", [0, -1, "abc", 1.5, True, None])
async def test_bad_sizes_are_400(volume_cloud: VolumeCloud, size: object) -> None:
    response = await volume_cloud.v3("POST", "/volumes", json={"volume": {"size": size}})
    assert response.status_code == 400
    assert set(response.json()["badRequest"]) == {"code", "message"}


async def test_bad_bodies_are_400(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    for body in (
        {},
        {"volume": "x"},
        {"volume": {"size": 1, "metadata": {"k": 1}}},
        {"volume": {"size": 1, "name": "x" * 256}},
        {"volume": {"size": 1, "availability_zone": "nowhere"}},
        {"volume": {"size": 1, "volume_type": "no-such-type"}},
    ):
        response = await cloud.v3("POST", "/volumes", json=body)
        assert response.status_code in (400, 404), (body, response.text)
    raw = await cloud.call("POST", f"{V3}/volumes", cloud.admin, content=b"{not json")
    assert raw.status_code == 400


async def test_tenancy(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    _, alice = await cloud.project_member(cloud.admin, "alice-p")
    _, bob = await cloud.project_member(cloud.admin, "bob-p")
    volume = await cloud.volume(alice, name="private")
    for method, path in (
        ("GET", f"/volumes/{volume['id']}"),
        ("DELETE", f"/volumes/{volume['id']}"),
        ("PUT", f"/volumes/{volume['id']}"),
        ("POST", f"/volumes/{volume['id']}/action"),
    ):
        kwargs = {"json": {"volume": {"name": "x"}}} if method == "PUT" else {}
        if path.endswith("action"):
            kwargs = {"json": {"os-extend": {"new_size": 2}}}
        response = await cloud.v3(method, path, bob, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
    assert volume["id"] not in [
        v["id"] for v in (await cloud.v3("GET", "/volumes", bob)).json()["volumes"]
    ]
    # Members cannot look at all projects; admins can.
    mine = await cloud.v3("GET", "/volumes?all_tenants=1", bob)
    assert volume["id"] not in [v["id"] for v in mine.json()["volumes"]]
    everyone = await cloud.v3("GET", "/volumes?all_tenants=1")
    assert volume["id"] in [v["id"] for v in everyone.json()["volumes"]]
    assert (await cloud.v3("GET", "/os-services", bob)).status_code == 403
    await cloud.v3("DELETE", f"/volumes/{volume['id']}", alice)
    await cloud.gone("volume", volume["id"], alice)


async def test_extend_grows_the_file_and_refuses_to_shrink(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="grow")
    same = await cloud.v3(
        "POST", f"/volumes/{volume['id']}/action", json={"os-extend": {"new_size": 1}}
    )
    assert same.status_code == 400 and "must be greater than current size" in same.text
    grown = await cloud.v3(
        "POST", f"/volumes/{volume['id']}/action", json={"os-extend": {"new_size": 3}}
    )
    assert grown.status_code == 202
    done = await cloud.wait("volume", volume["id"], ("available",))
    assert done["size"] == 3
    backend = done["os-vol-host-attr:host"].rpartition("#")[2]
    assert os.path.getsize(cloud.path_of(volume["id"], backend)) == 3 * GIB
    await cloud.v3("DELETE", f"/volumes/{volume['id']}")
    await cloud.gone("volume", volume["id"])
