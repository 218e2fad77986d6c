"""Neutron subnet pools in-process: CRUD, allocation of prefixes, bounds, tenancy, and
concurrent allocations (on SQLite, PostgreSQL and MariaDB) that never overlap."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from tests.conftest import CloudClient
from tests.functional import test_network_vxlan_api
from tests.functional.test_network_api import NET, create, error

# Identity and network on a fresh database of each backend.
cloud_on = test_network_vxlan_api.cloud_on


async def test_subnet_pool_lifecycle_and_allocation(cloud: CloudClient) -> None:
    token = await cloud.token()
    aliases = {
        e["alias"]
        for e in (await cloud.call("GET", f"{NET}/extensions", token)).json()["extensions"]
    }
    assert {"subnetpool", "subnet_allocation", "default-subnetpools"} <= aliases
    pool = await create(
        cloud,
        token,
        "subnetpool",
        {"name": "pool1", "prefixes": ["10.200.0.0/16"], "default_prefixlen": 24},
    )
    assert (pool["ip_version"], pool["prefixes"], pool["default_prefixlen"]) == (
        4,
        ["10.200.0.0/16"],
        24,
    )
    assert (pool["min_prefixlen"], pool["max_prefixlen"], pool["revision_number"]) == (8, 32, 1)
    assert pool["address_scope_id"] is None and pool["shared"] is False
    network = await create(cloud, token, "network", {"name": "pooled"})
    first = await create(
        cloud,
        token,
        "subnet",
        {"network_id": network["id"], "subnetpool_id": pool["id"], "prefixlen": 26},
    )
    assert (first["cidr"], first["subnetpool_id"]) == ("10.200.0.0/26", pool["id"])
    assert first["gateway_ip"] == "10.200.0.1"
    second = await create(
        cloud, token, "subnet", {"network_id": network["id"], "subnetpool_id": pool["id"]}
    )
    assert second["cidr"] == "10.200.1.0/24"  # the default length, past the first /26
    explicit = {"network_id": network["id"], "subnetpool_id": pool["id"]}
    assert await error(
        cloud, token, "POST", "/subnets", json={"subnet": {**explicit, "cidr": "10.200.0.32/27"}}
    ) == (409, "SubnetAllocationError")
    assert await error(
        cloud, token, "POST", "/subnets", json={"subnet": {**explicit, "cidr": "10.9.0.0/24"}}
    ) == (400, "InvalidInput")
    inside = await create(cloud, token, "subnet", {**explicit, "cidr": "10.200.0.64/26"})
    assert inside["subnetpool_id"] == pool["id"]
    assert await error(
        cloud, token, "POST", "/subnets", json={"subnet": {**explicit, "prefixlen": 4}}
    ) == (400, "MinPrefixSubnetAllocationError")
    updated = await cloud.call(
        "PUT",
        f"{NET}/subnetpools/{pool['id']}",
        token,
        json={"subnetpool": {"prefixes": ["10.200.0.0/16", "10.201.0.0/16"], "name": "wide"}},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["subnetpool"]["prefixes"] == ["10.200.0.0/15"]
    assert updated.json()["subnetpool"]["revision_number"] == 2
    shrink = {"subnetpool": {"prefixes": ["10.201.0.0/16"]}}
    assert await error(cloud, token, "PUT", f"/subnetpools/{pool['id']}", json=shrink) == (
        400,
        "IllegalSubnetPoolPrefixUpdate",
    )
    listed = (await cloud.call("GET", f"{NET}/subnetpools?name=wide", token)).json()
    assert [p["id"] for p in listed["subnetpools"]] == [pool["id"]]
    tagged = await cloud.call("PUT", f"{NET}/subnetpools/{pool['id']}/tags/blue", token)
    assert tagged.status_code == 201
    assert await error(cloud, token, "DELETE", f"/subnetpools/{pool['id']}") == (
        409,
        "SubnetPoolInUse",
    )
    for subnet in (first, second, inside):
        assert (
            await cloud.call("DELETE", f"{NET}/subnets/{subnet['id']}", token)
        ).status_code == 204
    assert (await cloud.call("DELETE", f"{NET}/subnetpools/{pool['id']}", token)).status_code == 204
    assert await error(cloud, token, "GET", f"/subnetpools/{pool['id']}") == (
        404,
        "SubnetPoolNotFound",
    )


async def test_exhaustion_bounds_and_bad_input(cloud: CloudClient) -> None:
    token = await cloud.token()
    pool = await create(
        cloud,
        token,
        "subnetpool",
        {"name": "tiny", "prefixes": ["10.210.0.0/24"], "min_prefixlen": 24,
         "default_prefixlen": 25, "max_prefixlen": 28},
    )  # fmt: skip
    network = await create(cloud, token, "network", {"name": "tiny-net"})
    request = {"network_id": network["id"], "subnetpool_id": pool["id"]}
    cidrs = [(await create(cloud, token, "subnet", request))["cidr"] for _ in range(2)]
    assert cidrs == ["10.210.0.0/25", "10.210.0.128/25"]
    assert await error(cloud, token, "POST", "/subnets", json={"subnet": request}) == (
        409,
        "PrefixPoolExhausted",
    )
    assert await error(
        cloud, token, "POST", "/subnets", json={"subnet": {**request, "prefixlen": 29}}
    ) == (400, "MaxPrefixSubnetAllocationError")
    bad_pools: list[dict[str, Any]] = [
        {"prefixes": ["10.0.0.0/8", "2001:db8::/32"]},
        {"prefixes": []},
        {"prefixes": ["not-a-cidr"]},
        {"prefixes": ["10.0.0.0/16"], "min_prefixlen": 28, "max_prefixlen": 24},
        {"prefixes": ["10.0.0.0/16"], "address_scope_id": "7e3f0b8e-0000-4000-8000-000000000000"},
    ]
    for body in bad_pools:
        status, _ = await error(cloud, token, "POST", "/subnetpools", json={"subnetpool": body})
        assert status == 400, body
    v6 = await create(cloud, token, "subnetpool", {"prefixes": ["2001:db8::/48"]})
    assert (v6["ip_version"], v6["min_prefixlen"], v6["default_prefixlen"]) == (6, 64, 64)
    mismatch = {"network_id": network["id"], "subnetpool_id": v6["id"], "ip_version": 4}
    status, _ = await error(cloud, token, "POST", "/subnets", json={"subnet": mismatch})
    assert status == 400


async def test_pool_tenancy_and_default_pool(cloud: CloudClient) -> None:
    admin = await cloud.token()
    _, alice = await cloud.project_member(admin, "pool-a")
    _, bob = await cloud.project_member(admin, "pool-b")
    private = await create(cloud, alice, "subnetpool", {"prefixes": ["10.220.0.0/16"]})
    assert await error(cloud, bob, "GET", f"/subnetpools/{private['id']}") == (
        404,
        "SubnetPoolNotFound",
    )
    for attrs in ({"shared": True}, {"is_default": True}):
        status, kind = await error(
            cloud, alice, "POST", "/subnetpools",
            json={"subnetpool": {"prefixes": ["10.221.0.0/16"], **attrs}},
        )  # fmt: skip
        assert (status, kind) == (403, "PolicyNotAuthorized")
    shared = await create(
        cloud,
        admin,
        "subnetpool",
        {"prefixes": ["10.230.0.0/16"], "shared": True, "is_default": True,
         "default_prefixlen": 24, "default_quota": 512},
    )  # fmt: skip
    seen = {
        p["id"] for p in (await cloud.call("GET", f"{NET}/subnetpools", bob)).json()["subnetpools"]
    }
    assert shared["id"] in seen and private["id"] not in seen
    network = await create(cloud, bob, "network", {"name": "bob-net"})
    by_default = await create(
        cloud, bob, "subnet", {"network_id": network["id"], "use_default_subnetpool": True}
    )
    assert (by_default["subnetpool_id"], by_default["cidr"]) == (shared["id"], "10.230.0.0/24")
    over_quota = {"network_id": network["id"], "subnetpool_id": shared["id"], "prefixlen": 23}
    assert await error(cloud, bob, "POST", "/subnets", json={"subnet": over_quota}) == (
        409,
        "SubnetPoolQuotaExceeded",
    )
    foreign = {"network_id": network["id"], "subnetpool_id": private["id"]}
    assert await error(cloud, bob, "POST", "/subnets", json={"subnet": foreign}) == (
        404,
        "SubnetPoolNotFound",
    )
    status, _ = await error(
        cloud, bob, "PUT", f"/subnetpools/{shared['id']}", json={"subnetpool": {"name": "x"}}
    )
    assert status in (403, 404)
    await cloud.call("DELETE", f"{NET}/subnets/{by_default['id']}", bob)
    await cloud.call("DELETE", f"{NET}/subnetpools/{shared['id']}", admin)


async def test_concurrent_allocations_never_overlap(cloud_on: CloudClient) -> None:
    cloud = cloud_on
    token = await cloud.token()
    pool = await create(
        cloud, token, "subnetpool", {"prefixes": ["10.240.0.0/20"], "default_prefixlen": 26}
    )
    networks = [await create(cloud, token, "network", {"name": f"race-{i}"}) for i in range(4)]

    async def carve(index: int) -> str:
        body = {"network_id": networks[index % 4]["id"], "subnetpool_id": pool["id"],
                "prefixlen": 26 if index % 3 else 25}  # fmt: skip
        return str((await create(cloud, token, "subnet", body))["cidr"])

    cidrs = [ipaddress.IPv4Network(c) for c in await asyncio.gather(*(carve(i) for i in range(24)))]
    assert len(cidrs) == 24
    for index, cidr in enumerate(cidrs):
        assert cidr.subnet_of(ipaddress.IPv4Network("10.240.0.0/20"))
        assert not any(cidr.overlaps(other) for other in cidrs[index + 1 :]), cidr
