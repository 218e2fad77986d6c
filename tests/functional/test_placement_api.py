"""The Placement API in-process: versions, errors, providers and trees, inventories, traits,
resource classes and aggregates, at the microversions that change them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.functional.placement_client import Placement, placement_cloud


@pytest.fixture
async def placement(tmp_path: Path) -> AsyncIterator[Placement]:
    async with placement_cloud(tmp_path) as client:
        yield client


async def test_versions_and_negotiation(placement: Placement) -> None:
    root = await placement.cloud.http.get("/placement/")
    assert root.status_code == 200
    [version] = root.json()["versions"]
    assert version == {
        "id": "v1.0",
        "min_version": "1.0",
        "max_version": "1.39",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": ""}],
    }
    assert root.headers["openstack-api-version"] == "placement 1.0"
    assert "openstack-api-version" in root.headers["vary"].lower()
    latest = await placement.call("GET", "/", version="latest")
    assert latest.headers["openstack-api-version"] == "placement 1.39"
    too_new = await placement.error("GET", "/", 406, version="1.40")
    assert (too_new["min_version"], too_new["max_version"]) == ("1.0", "1.39")
    await placement.error("GET", "/", 400, version="pony.horse")
    await placement.error("GET", "/", 400, version="1.2.3")
    unknown = await placement.error("GET", "/barnabas", 404)
    assert unknown["code"] == "placement.undefined_code"
    wrong_method = await placement.call("DELETE", "/resource_providers")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["openstack-api-version"] == "placement 1.39"
    await placement.error("GET", "/resource_providers", 406, headers={"Accept": "text/plain"})
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    await placement.ok("GET", "/resource_providers", headers={"Accept": browser})
    anonymous = await placement.cloud.http.get("/placement/resource_providers")
    assert anonymous.status_code == 401


async def test_routes_appear_at_their_microversions(placement: Placement) -> None:
    for path, since in (
        ("/resource_classes", "1.2"),
        ("/traits", "1.6"),
        ("/usages?project_id=p", "1.9"),
        ("/allocation_candidates?resources=VCPU:1", "1.10"),
    ):
        older = f"1.{int(since.split('.')[1]) - 1}"
        await placement.error("GET", path, 404, version=older)
        await placement.ok("GET", path, version=since)
    rp = await placement.provider("cn", {"VCPU": 4})
    await placement.error("DELETE", f"/resource_providers/{rp}/inventories", 405, version="1.4")
    await placement.ok("DELETE", f"/resource_providers/{rp}/inventories", 204, version="1.5")


async def test_provider_lifecycle_and_shapes(placement: Placement) -> None:
    ident = str(uuid.uuid4())
    old = await placement.call(
        "POST", "/resource_providers", version="1.19", json={"name": "old", "uuid": ident}
    )
    assert old.status_code == 201 and not old.content
    assert old.headers["location"].endswith(f"/resource_providers/{ident}")
    shown = await placement.ok("GET", f"/resource_providers/{ident}", version="1.0")
    assert [link["rel"] for link in shown["links"]] == ["self", "inventories", "usages"]
    assert "root_provider_uuid" not in shown
    shown = await placement.ok("GET", f"/resource_providers/{ident}")
    assert [link["rel"] for link in shown["links"]] == [
        "self", "aggregates", "inventories", "usages", "traits", "allocations",
    ]  # fmt: skip
    assert shown["links"][0]["href"] == f"/placement/resource_providers/{ident}"
    assert (shown["generation"], shown["parent_provider_uuid"], shown["root_provider_uuid"]) == (
        0,
        None,
        ident,
    )
    created = await placement.ok("POST", "/resource_providers", json={"name": "new"})
    assert uuid.UUID(created["uuid"]) and created["root_provider_uuid"] == created["uuid"]
    duplicate_name = await placement.error("POST", "/resource_providers", 409, json={"name": "new"})
    assert duplicate_name["code"] == "placement.duplicate_name"
    await placement.error("POST", "/resource_providers", 409, json={"name": "x", "uuid": ident})
    for bad in ({"name": "x" * 201}, {"name": "y", "uuid": "not-a-uuid"}, {"nom": "z"}, {}):
        await placement.error("POST", "/resource_providers", 400, json=bad)
    await placement.error("POST", "/resource_providers", 415, content=b"{}",
                          headers={"Content-Type": "text/plain"})  # fmt: skip
    renamed = await placement.ok("PUT", f"/resource_providers/{ident}", json={"name": "renamed"})
    assert renamed["name"] == "renamed"
    await placement.error("PUT", f"/resource_providers/{ident}", 409, json={"name": "new"})
    listed = await placement.ok("GET", "/resource_providers?name=renamed")
    assert [p["uuid"] for p in listed["resource_providers"]] == [ident]
    assert (await placement.ok("GET", f"/resource_providers?uuid={ident}"))["resource_providers"]
    await placement.error("GET", "/resource_providers?bogus=1", 400)
    await placement.ok("DELETE", f"/resource_providers/{ident}", 204)
    await placement.error("GET", f"/resource_providers/{ident}", 404)
    await placement.error("DELETE", f"/resource_providers/{ident}", 404)


async def test_provider_trees(placement: Placement) -> None:
    root = await placement.provider("root")
    child = await placement.provider("child", parent=root)
    grandchild = await placement.provider("grandchild", parent=child)
    other = await placement.provider("other")
    shown = await placement.ok("GET", f"/resource_providers/{grandchild}")
    assert (shown["parent_provider_uuid"], shown["root_provider_uuid"]) == (child, root)
    tree = await placement.ok("GET", f"/resource_providers?in_tree={grandchild}")
    assert {p["uuid"] for p in tree["resource_providers"]} == {root, child, grandchild}
    missing_parent = {"name": "orphan", "parent_provider_uuid": str(uuid.uuid4())}
    await placement.error("POST", "/resource_providers", 400, json=missing_parent)
    parent = await placement.error("DELETE", f"/resource_providers/{child}", 409)
    assert parent["code"] == "placement.resource_provider.cannot_delete_parent"
    move = {"name": "child", "parent_provider_uuid": other}
    await placement.error("PUT", f"/resource_providers/{child}", 400, json=move, version="1.36")
    loop = {"name": "root", "parent_provider_uuid": grandchild}
    await placement.error("PUT", f"/resource_providers/{root}", 400, json=loop)
    await placement.ok("PUT", f"/resource_providers/{child}", json=move)
    moved = await placement.ok("GET", f"/resource_providers/{grandchild}")
    assert moved["root_provider_uuid"] == other
    await placement.ok(
        "PUT", f"/resource_providers/{child}", json={"name": "child", "parent_provider_uuid": None}
    )
    alone = await placement.ok("GET", f"/resource_providers/{grandchild}")
    assert alone["root_provider_uuid"] == child


async def test_inventories(placement: Placement) -> None:
    rp = await placement.provider("cn")
    base = f"/resource_providers/{rp}/inventories"
    stale = await placement.error(
        "PUT", base, 409, json={"resource_provider_generation": 5, "inventories": {}}
    )
    assert stale["code"] == "placement.concurrent_update"
    done = await placement.ok(
        "PUT",
        base,
        json={
            "resource_provider_generation": 0,
            "inventories": {
                "VCPU": {"total": 64, "reserved": 2, "allocation_ratio": 10.0},
                "MEMORY_MB": {"total": 128, "max_unit": 16, "step_size": 4, "allocation_ratio": 2},
            },
        },
    )
    assert done["resource_provider_generation"] == 1
    assert done["inventories"]["VCPU"] == {
        "total": 64, "reserved": 2, "min_unit": 1, "max_unit": 2147483647,
        "step_size": 1, "allocation_ratio": 10.0,
    }  # fmt: skip
    one = await placement.ok("GET", f"{base}/MEMORY_MB")
    assert (one["step_size"], one["resource_provider_generation"]) == (4, 1)
    updated = await placement.ok(
        "PUT", f"{base}/VCPU", json={"resource_provider_generation": 1, "total": 32}
    )
    assert (updated["total"], updated["reserved"], updated["resource_provider_generation"]) == (
        32,
        0,
        2,
    )
    await placement.error(
        "PUT", f"{base}/DISK_GB", 400, json={"resource_provider_generation": 2, "total": 1}
    )
    created = await placement.call("POST", base, json={"resource_class": "DISK_GB", "total": 100})
    assert created.status_code == 201 and created.headers["location"].endswith("/DISK_GB")
    await placement.error("POST", base, 409, json={"resource_class": "DISK_GB", "total": 1})
    bad_bodies = [
        {"resource_provider_generation": 3, "inventories": {"VCPU": {"total": 0}}},
        {"resource_provider_generation": 3, "inventories": {"VCPU": {"total": "8"}}},
        {"resource_provider_generation": 3, "inventories": {"VCPU": {"total": 8, "x": 1}}},
        {"resource_provider_generation": 3, "inventories": {"vcpu": {"total": 8}}},
        {"resource_provider_generation": 3, "inventories": {"CUSTOM_NOPE": {"total": 8}}},
        {"resource_provider_generation": 3, "inventories": {"VCPU": {"total": 8, "reserved": 9}}},
        {"inventories": {}},
    ]
    for body in bad_bodies:
        await placement.error("PUT", base, 400, json=body)
    # reserved == total: refused before 1.26, allowed from it.
    equal = {
        "resource_provider_generation": 3,
        "inventories": {"VCPU": {"total": 8, "reserved": 8}},
    }
    await placement.error("PUT", base, 400, json=equal, version="1.25")
    await placement.ok("PUT", base, json=equal, version="1.26")
    listed = await placement.ok("GET", base)
    assert set(listed["inventories"]) == {"VCPU"}  # PUT replaces the whole set
    await placement.ok("DELETE", f"{base}/VCPU", 204)
    await placement.error("DELETE", f"{base}/VCPU", 404)
    await placement.error("GET", f"{base}/VCPU", 404)
    await placement.error("GET", f"/resource_providers/{uuid.uuid4()}/inventories", 404)


async def test_inventory_in_use_cannot_go(placement: Placement) -> None:
    rp = await placement.provider("cn", {"VCPU": 4, "DISK_GB": 10})
    consumer = str(uuid.uuid4())
    assert (await placement.allocate(consumer, {rp: {"VCPU": 2}})).status_code == 204
    generation = (await placement.ok("GET", f"/resource_providers/{rp}"))["generation"]
    in_use = await placement.error(
        "PUT",
        f"/resource_providers/{rp}/inventories",
        409,
        json={"resource_provider_generation": generation, "inventories": {"DISK_GB": {"total": 5}}},
    )
    assert in_use["code"] == "placement.inventory.inuse" and "VCPU" in in_use["detail"]
    await placement.error("DELETE", f"/resource_providers/{rp}/inventories/VCPU", 409)
    await placement.error("DELETE", f"/resource_providers/{rp}/inventories", 409)
    # Nothing changed: the failed replace rolled back.
    listed = await placement.ok("GET", f"/resource_providers/{rp}/inventories")
    assert set(listed["inventories"]) == {"VCPU", "DISK_GB"}
    # Shrinking below usage is allowed (the provider is over capacity until usage drops).
    await placement.ok(
        "PUT",
        f"/resource_providers/{rp}/inventories/VCPU",
        json={"resource_provider_generation": listed["resource_provider_generation"], "total": 1},
    )
    await placement.ok("DELETE", f"/resource_providers/{rp}/inventories/DISK_GB", 204)


async def test_traits(placement: Placement) -> None:
    traits = (await placement.ok("GET", "/traits"))["traits"]
    assert {"HW_CPU_X86_AVX2", "COMPUTE_NODE", "MISC_SHARES_VIA_AGGREGATE"} <= set(traits)
    put = await placement.call("PUT", "/traits/CUSTOM_GOLD")
    assert put.status_code == 201 and put.headers["location"].endswith("/traits/CUSTOM_GOLD")
    await placement.ok("PUT", "/traits/CUSTOM_GOLD", 204)
    await placement.ok("GET", "/traits/CUSTOM_GOLD", 204)
    await placement.error("GET", "/traits/CUSTOM_SILVER", 404)
    await placement.error("PUT", "/traits/GOLD", 400)
    await placement.error("DELETE", "/traits/HW_CPU_X86_AVX2", 400)
    customs = await placement.ok("GET", "/traits?name=startswith:CUSTOM_")
    assert customs["traits"] == ["CUSTOM_GOLD"]
    picked = await placement.ok("GET", "/traits?name=in:CUSTOM_GOLD,HW_CPU_X86_SSE,NOPE")
    assert picked["traits"] == ["CUSTOM_GOLD", "HW_CPU_X86_SSE"]
    await placement.error("GET", "/traits?name=CUSTOM_GOLD", 400)
    await placement.error("GET", "/traits?associated=maybe", 400)

    rp = await placement.provider("cn")
    base = f"/resource_providers/{rp}/traits"
    assert await placement.ok("GET", base) == {"traits": [], "resource_provider_generation": 0}
    done = await placement.ok(
        "PUT",
        base,
        json={"resource_provider_generation": 0, "traits": ["CUSTOM_GOLD", "HW_CPU_X86_SSE"]},
    )
    assert done == {"traits": ["CUSTOM_GOLD", "HW_CPU_X86_SSE"], "resource_provider_generation": 1}
    await placement.error("PUT", base, 409, json={"resource_provider_generation": 0, "traits": []})
    await placement.error(
        "PUT", base, 400, json={"resource_provider_generation": 1, "traits": ["CUSTOM_NOPE"]}
    )
    assert (await placement.ok("GET", "/traits?associated=true"))["traits"] == [
        "CUSTOM_GOLD", "HW_CPU_X86_SSE",
    ]  # fmt: skip
    await placement.error("DELETE", "/traits/CUSTOM_GOLD", 409)
    with_trait = await placement.ok("GET", "/resource_providers?required=CUSTOM_GOLD")
    assert [p["uuid"] for p in with_trait["resource_providers"]] == [rp]
    without = await placement.ok("GET", "/resource_providers?required=!CUSTOM_GOLD")
    assert without["resource_providers"] == []
    await placement.error("GET", "/resource_providers?required=!CUSTOM_GOLD", 400, version="1.21")
    await placement.error("GET", "/resource_providers?required=CUSTOM_NOPE", 400)
    await placement.ok("DELETE", base, 204)
    assert (await placement.ok("GET", base))["traits"] == []
    await placement.ok("DELETE", "/traits/CUSTOM_GOLD", 204)
    await placement.error("DELETE", "/traits/CUSTOM_GOLD", 404)


async def test_resource_classes(placement: Placement) -> None:
    listed = (await placement.ok("GET", "/resource_classes"))["resource_classes"]
    assert [c["name"] for c in listed[:3]] == ["VCPU", "MEMORY_MB", "DISK_GB"]
    assert listed[0]["links"] == [{"rel": "self", "href": "/placement/resource_classes/VCPU"}]
    created = await placement.call("POST", "/resource_classes", json={"name": "CUSTOM_FPGA"})
    assert created.status_code == 201
    assert (
        created.headers["location"]
        == "http://127.0.0.1:8000/placement/resource_classes/CUSTOM_FPGA"
    )
    duplicate = await placement.error(
        "POST", "/resource_classes", 409, json={"name": "CUSTOM_FPGA"}
    )
    assert duplicate["code"] == "placement.duplicate_name"
    await placement.error("POST", "/resource_classes", 400, json={"name": "FPGA2"})
    shown = await placement.ok("GET", "/resource_classes/CUSTOM_FPGA")
    assert shown["name"] == "CUSTOM_FPGA"
    await placement.ok("PUT", "/resource_classes/CUSTOM_FPGA", 204)
    await placement.ok("PUT", "/resource_classes/CUSTOM_GPU", 201)
    await placement.error("PUT", "/resource_classes/GPU", 400)
    renamed = await placement.ok(
        "PUT", "/resource_classes/CUSTOM_GPU", json={"name": "CUSTOM_GPU2"}, version="1.6"
    )
    assert renamed["name"] == "CUSTOM_GPU2"
    await placement.error("GET", "/resource_classes/CUSTOM_GPU", 404)
    await placement.error("DELETE", "/resource_classes/VCPU", 400)
    rp = await placement.provider("cn", {"CUSTOM_FPGA": 2})
    await placement.error("DELETE", "/resource_classes/CUSTOM_FPGA", 409)
    await placement.ok("DELETE", f"/resource_providers/{rp}", 204)
    await placement.ok("DELETE", "/resource_classes/CUSTOM_FPGA", 204)
    await placement.error("DELETE", "/resource_classes/CUSTOM_FPGA", 404)


async def test_aggregates(placement: Placement) -> None:
    rp = await placement.provider("cn")
    base = f"/resource_providers/{rp}/aggregates"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    old = await placement.ok("PUT", base, json=[first], version="1.1")
    assert old == {"aggregates": [first]}
    assert (await placement.ok("GET", base, version="1.18")) == {"aggregates": [first]}
    current = await placement.ok("GET", base)
    assert current == {"aggregates": [first], "resource_provider_generation": 0}
    done = await placement.ok(
        "PUT", base, json={"aggregates": [first, second], "resource_provider_generation": 0}
    )
    assert sorted(done["aggregates"]) == sorted([first, second])
    assert done["resource_provider_generation"] == 1
    stale = await placement.error(
        "PUT", base, 409, json={"aggregates": [], "resource_provider_generation": 0}
    )
    assert stale["code"] == "placement.concurrent_update"
    await placement.error(
        "PUT", base, 400, json={"aggregates": ["nope"], "resource_provider_generation": 1}
    )
    await placement.error("PUT", base, 400, json=[first, first], version="1.1")
    other = await placement.provider("other", aggregates=[second])
    members = await placement.ok("GET", f"/resource_providers?member_of={first}")
    assert [p["uuid"] for p in members["resource_providers"]] == [rp]
    either = await placement.ok("GET", f"/resource_providers?member_of=in:{first},{second}")
    assert {p["uuid"] for p in either["resource_providers"]} == {rp, other}
    both = await placement.ok("GET", f"/resource_providers?member_of={first}&member_of={second}")
    assert [p["uuid"] for p in both["resource_providers"]] == [rp]
    not_first = await placement.ok("GET", f"/resource_providers?member_of=!{first}")
    assert [p["uuid"] for p in not_first["resource_providers"]] == [other]
    await placement.error("GET", f"/resource_providers?member_of={first},{second}", 400)
    await placement.error(
        "GET", f"/resource_providers?member_of={first}&member_of={second}", 400, version="1.23"
    )
