"""``GET /allocation_candidates`` in-process: flat hosts, trees, sharing providers, granular
groups, and the response shape of each microversion."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.placement_client import Placement, placement_cloud


@pytest.fixture
async def placement(tmp_path: Path) -> AsyncIterator[Placement]:
    async with placement_cloud(tmp_path) as client:
        yield client


async def candidates(placement: Placement, query: str, version: str | None = None) -> Any:
    return await placement.ok("GET", f"/allocation_candidates?{query}", version=version)


def providers_of(found: Any) -> list[set[str]]:
    """The providers of each allocation request (1.12+ shape)."""
    return [set(request["allocations"]) for request in found["allocation_requests"]]


async def test_flat_hosts_by_capacity_traits_and_aggregates(placement: Placement) -> None:
    agg1, agg2 = str(uuid.uuid4()), str(uuid.uuid4())
    big = await placement.provider(
        "big", {"VCPU": 16, "MEMORY_MB": 8192}, traits=["HW_CPU_X86_AVX2"], aggregates=[agg1]
    )
    small = await placement.provider(
        "small", {"VCPU": 2, "MEMORY_MB": 1024}, traits=["CUSTOM_GOLD"], aggregates=[agg2]
    )
    await placement.provider("disk-only", {"DISK_GB": 100})

    async def hosts(query: str, version: str | None = None) -> set[str]:
        found = await candidates(placement, query, version)
        return set().union(*providers_of(found)) if found["allocation_requests"] else set()

    assert await hosts("resources=VCPU:1,MEMORY_MB:512") == {big, small}
    assert await hosts("resources=VCPU:4") == {big}
    assert await hosts("resources=VCPU:1&required=HW_CPU_X86_AVX2") == {big}
    assert await hosts("resources=VCPU:1&required=!HW_CPU_X86_AVX2") == {small}
    assert await hosts("resources=VCPU:1&required=in:CUSTOM_GOLD,HW_CPU_X86_AVX2") == {big, small}
    either_not_avx = "required=in:CUSTOM_GOLD,HW_CPU_X86_AVX2&required=!HW_CPU_X86_AVX2"
    assert await hosts(f"resources=VCPU:1&{either_not_avx}") == {small}
    assert await hosts(f"resources=VCPU:1&member_of={agg2}") == {small}
    assert await hosts(f"resources=VCPU:1&member_of=in:{agg1},{agg2}") == {big, small}
    assert await hosts(f"resources=VCPU:1&member_of=!{agg1}") == {small}
    assert await hosts(f"resources=VCPU:1&in_tree={small}") == {small}
    assert await hosts(f"resources=VCPU:1&in_tree={uuid.uuid4()}") == set()
    assert await hosts("resources=VCPU:1&root_required=CUSTOM_GOLD") == {small}
    assert await hosts("resources=VCPU:1&root_required=!CUSTOM_GOLD") == {big}
    limited = await candidates(placement, "resources=VCPU:1&limit=1")
    assert len(limited["allocation_requests"]) == 1
    assert list(limited["provider_summaries"]) == list(
        limited["allocation_requests"][0]["allocations"]
    )

    # Claims change what is free.
    consumer = str(uuid.uuid4())
    assert (await placement.allocate(consumer, {big: {"VCPU": 14}})).status_code == 204
    assert await hosts("resources=VCPU:4") == set()
    assert await hosts("resources=VCPU:2") == {big, small}


async def test_response_shape_by_microversion(placement: Placement) -> None:
    rp = await placement.provider(
        "cn", {"VCPU": 8, "MEMORY_MB": 2048, "DISK_GB": 50}, traits=["HW_CPU_X86_SSE"]
    )
    old = await candidates(placement, "resources=VCPU:1", "1.10")
    assert old["allocation_requests"] == [
        {"allocations": [{"resource_provider": {"uuid": rp}, "resources": {"VCPU": 1}}]}
    ]
    assert old["provider_summaries"] == {rp: {"resources": {"VCPU": {"capacity": 8, "used": 0}}}}
    keyed = await candidates(placement, "resources=VCPU:1", "1.12")
    assert keyed["allocation_requests"] == [{"allocations": {rp: {"resources": {"VCPU": 1}}}}]
    with_traits = await candidates(placement, "resources=VCPU:1", "1.17")
    assert with_traits["provider_summaries"][rp]["traits"] == ["HW_CPU_X86_SSE"]
    every_class = await candidates(placement, "resources=VCPU:1", "1.27")
    assert set(every_class["provider_summaries"][rp]["resources"]) == {
        "VCPU",
        "MEMORY_MB",
        "DISK_GB",
    }
    nested = await candidates(placement, "resources=VCPU:1", "1.29")
    summary = nested["provider_summaries"][rp]
    assert (summary["parent_provider_uuid"], summary["root_provider_uuid"]) == (None, rp)
    mapped = await candidates(placement, "resources=VCPU:1", "1.34")
    assert mapped["allocation_requests"][0]["mappings"] == {"": [rp]}
    # The allocation request is a valid PUT body for the same microversion.
    body = {
        **mapped["allocation_requests"][0],
        "project_id": "p",
        "user_id": "u",
        "consumer_generation": None,
    }
    await placement.ok("PUT", f"/allocations/{uuid.uuid4()}", 204, json=body, version="1.34")


async def test_bad_queries(placement: Placement) -> None:
    await placement.provider("cn", {"VCPU": 8})
    for query, version in (
        ("", None),
        ("resources=", None),
        ("resources=VCPU", None),
        ("resources=VCPU:0", None),
        ("resources=VCPU:x", None),
        ("resources=CUSTOM_NOPE:1", None),
        ("resources=VCPU:1&required=CUSTOM_NOPE", None),
        ("resources=VCPU:1&required=HW_CPU_X86_SSE,!HW_CPU_X86_SSE", None),
        ("resources=VCPU:1&required=in:A,!B", None),
        ("resources=VCPU:1&required=in:HW_CPU_X86_SSE", "1.38"),
        ("resources=VCPU:1&required=!HW_CPU_X86_SSE", "1.21"),
        ("resources=VCPU:1&limit=0", None),
        ("resources=VCPU:1&limit=1", "1.15"),
        ("resources=VCPU:1&member_of=nope", None),
        ("resources=VCPU:1&member_of=x,y", None),
        ("resources=VCPU:1&in_tree=nope", None),
        ("resources=VCPU:1&bogus=1", None),
        ("resources1=VCPU:1&resources2=VCPU:1", None),
        ("resources1=VCPU:1&group_policy=sometimes", None),
        ("resources=VCPU:1&required1=HW_CPU_X86_SSE", "1.35"),
        ("resources=VCPU:1&required1=HW_CPU_X86_SSE", None),
        ("resources=VCPU:1&resources1=VCPU:1&same_subtree=2", None),
        ("resources=VCPU:1&root_required=A&root_required=B", None),
        ("resources_foo=VCPU:1", "1.32"),
    ):
        await placement.error("GET", f"/allocation_candidates?{query}", 400, version=version)


async def compute_tree(placement: Placement, name: str) -> dict[str, str]:
    """A compute node with disk, two NUMA nodes with CPUs and memory, one NIC with VFs."""
    root = await placement.provider(name, {"DISK_GB": 100}, traits=["COMPUTE_NODE"])
    numa0 = await placement.provider(
        f"{name}-numa0", {"VCPU": 4, "MEMORY_MB": 2048}, parent=root, traits=["HW_NUMA_ROOT"]
    )
    numa1 = await placement.provider(
        f"{name}-numa1", {"VCPU": 4, "MEMORY_MB": 2048}, parent=root, traits=["HW_NUMA_ROOT"]
    )
    nic = await placement.provider(
        f"{name}-nic", {"SRIOV_NET_VF": 8}, parent=numa1, traits=["CUSTOM_PHYSNET1"]
    )
    return {"root": root, "numa0": numa0, "numa1": numa1, "nic": nic}


async def test_nested_trees(placement: Placement) -> None:
    tree = await compute_tree(placement, "cn1")
    found = await candidates(placement, "resources=VCPU:2,DISK_GB:10")
    combos = providers_of(found)
    assert sorted(map(sorted, combos)) == sorted(
        [sorted({tree["root"], tree["numa0"]}), sorted({tree["root"], tree["numa1"]})]
    )
    # Summaries cover the whole tree, parents and roots included.
    assert set(found["provider_summaries"]) == set(tree.values())
    nic = found["provider_summaries"][tree["nic"]]
    assert (nic["parent_provider_uuid"], nic["root_provider_uuid"]) == (tree["numa1"], tree["root"])
    # Too much for one NUMA node: the two are combined only within the unsuffixed group.
    both = providers_of(await candidates(placement, "resources=VCPU:6"))
    assert both == []
    # Required traits are met by the providers of the request together.
    with_vf = providers_of(
        await candidates(placement, "resources=VCPU:1,SRIOV_NET_VF:1&required=CUSTOM_PHYSNET1")
    )
    assert {tree["nic"]} < set().union(*with_vf)
    forbidden = await candidates(placement, "resources=VCPU:1&required=!HW_NUMA_ROOT")
    assert forbidden["allocation_requests"] == []
    # Before 1.29 a request may only take from one provider per tree.
    old = await candidates(placement, "resources=VCPU:2,DISK_GB:10", "1.28")
    assert old["allocation_requests"] == []
    single = await candidates(placement, "resources=VCPU:2", "1.28")
    assert {len(r["allocations"]) for r in single["allocation_requests"]} == {1}
    # A tree member's in_tree restricts candidates to its tree.
    other = await compute_tree(placement, "cn2")
    mine = providers_of(await candidates(placement, f"resources=VCPU:1&in_tree={other['nic']}"))
    assert set().union(*mine) <= set(other.values())
    rooted = providers_of(
        await candidates(placement, "resources=VCPU:1&root_required=COMPUTE_NODE")
    )
    assert len(rooted) == 4


async def test_granular_groups(placement: Placement) -> None:
    tree = await compute_tree(placement, "cn1")
    isolated = await candidates(
        placement, "resources1=VCPU:1&resources2=VCPU:1&group_policy=isolate"
    )
    pairs = [r["mappings"] for r in isolated["allocation_requests"]]
    assert pairs and all(m["1"] != m["2"] for m in pairs)
    shared = await candidates(placement, "resources1=VCPU:1&resources2=VCPU:1&group_policy=none")
    assert len(shared["allocation_requests"]) > len(isolated["allocation_requests"])
    same = [r for r in shared["allocation_requests"] if r["mappings"]["1"] == r["mappings"]["2"]]
    assert same and all(
        next(iter(r["allocations"].values()))["resources"]["VCPU"] == 2 for r in same
    )
    # A suffixed group is satisfied by one provider: 6 VCPU fit no NUMA node.
    assert (await candidates(placement, "resources1=VCPU:6"))["allocation_requests"] == []
    named = await candidates(
        placement,
        "resources_CPU=VCPU:1&required_CPU=HW_NUMA_ROOT&resources_NET=SRIOV_NET_VF:1"
        "&group_policy=none&same_subtree=_CPU,_NET",
    )
    for request in named["allocation_requests"]:
        assert request["mappings"]["_CPU"] == [tree["numa1"]]
        assert request["mappings"]["_NET"] == [tree["nic"]]
    # A group without resources (same_subtree only) maps to the provider with the trait.
    resourceless = await candidates(
        placement,
        "resources_NET=SRIOV_NET_VF:1&required_NUMA=HW_NUMA_ROOT&same_subtree=_NET,_NUMA"
        "&group_policy=none",
    )
    [request] = resourceless["allocation_requests"]
    assert request["mappings"] == {"_NET": [tree["nic"]], "_NUMA": [tree["numa1"]]}
    assert request["allocations"] == {tree["nic"]: {"resources": {"SRIOV_NET_VF": 1}}}


async def test_sharing_providers(placement: Placement) -> None:
    aggregate = str(uuid.uuid4())
    cn1 = await placement.provider("cn1", {"VCPU": 4}, aggregates=[aggregate])
    cn2 = await placement.provider("cn2", {"VCPU": 4}, aggregates=[aggregate])
    await placement.provider("cn3", {"VCPU": 4})
    nfs = await placement.provider(
        "nfs", {"DISK_GB": 1000}, traits=["MISC_SHARES_VIA_AGGREGATE"], aggregates=[aggregate]
    )
    found = await candidates(placement, "resources=VCPU:1,DISK_GB:10")
    assert sorted(map(sorted, providers_of(found))) == sorted(
        [sorted({cn1, nfs}), sorted({cn2, nfs})]
    )
    assert found["provider_summaries"][nfs]["resources"]["DISK_GB"]["capacity"] == 1000
    # Disk alone comes from the sharing provider (anchored on each tree that shares it).
    disk_only = providers_of(await candidates(placement, "resources=DISK_GB:10"))
    assert disk_only and all(combo == {nfs} for combo in disk_only)
    # A claim on the shared disk counts against every host that uses it.
    consumer = str(uuid.uuid4())
    claim = await placement.allocate(consumer, {cn1: {"VCPU": 1}, nfs: {"DISK_GB": 995}})
    assert claim.status_code == 204
    assert providers_of(await candidates(placement, "resources=VCPU:1,DISK_GB:10")) == []


async def test_direct_and_general_paths_agree(placement: Placement) -> None:
    """The one-query path for flat clouds gives what the tree-aware path gives."""
    rng = random.Random(7)
    aggregates = [str(uuid.uuid4()) for _ in range(3)]
    hosts = []
    for index in range(30):
        hosts.append(
            await placement.provider(
                f"h{index}",
                {
                    "VCPU": {
                        "total": rng.randint(1, 8),
                        "allocation_ratio": rng.choice([1.0, 2.0]),
                    },
                    "MEMORY_MB": {"total": rng.choice([512, 1024, 4096]), "step_size": 256},
                },
                traits=rng.sample(["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE", "CUSTOM_GOLD"], 2),
                aggregates=rng.sample(aggregates, 1),
            )
        )
    for host in rng.sample(hosts, 10):
        await placement.allocate(str(uuid.uuid4()), {host: {"VCPU": 1, "MEMORY_MB": 256}})
    queries = [
        "resources=VCPU:2,MEMORY_MB:512",
        "resources=VCPU:1&required=CUSTOM_GOLD,!HW_CPU_X86_SSE",
        f"resources=MEMORY_MB:1024&member_of=in:{aggregates[0]},{aggregates[1]}",
        f"resources=VCPU:3&member_of=!{aggregates[2]}&required=in:CUSTOM_GOLD,HW_CPU_X86_AVX2",
        "resources=VCPU:1&root_required=HW_CPU_X86_AVX2",
    ]
    direct = [await candidates(placement, query) for query in queries]
    # Any tree in the cloud sends every request down the general path.
    parent = await placement.provider("elsewhere")
    await placement.provider("child", parent=parent)
    general = [await candidates(placement, query) for query in queries]
    for query, one, other in zip(queries, direct, general, strict=True):
        assert sorted(map(sorted, providers_of(one))) == sorted(map(sorted, providers_of(other))), (
            query
        )
        assert one["provider_summaries"] == other["provider_summaries"], query
