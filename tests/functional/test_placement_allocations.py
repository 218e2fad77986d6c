"""Placement allocations in-process: per consumer, per provider, several consumers at once,
consumer generations and types, usages, and claims that race for the last unit (on SQLite,
PostgreSQL and MariaDB)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from onestack.placement.models import Allocation, Inventory
from onestack.placement.unit import PlacementUnit
from tests.backends import database_url
from tests.functional.placement_client import Placement, placement_cloud


@pytest.fixture
async def placement(tmp_path: Path) -> AsyncIterator[Placement]:
    async with placement_cloud(tmp_path) as client:
        yield client


def new_consumer() -> str:
    return str(uuid.uuid4())


async def test_allocations_for_one_consumer(placement: Placement) -> None:
    compute = await placement.provider("cn", {"VCPU": 8, "MEMORY_MB": 1024})
    storage = await placement.provider("disk", {"DISK_GB": 100})
    consumer = new_consumer()
    assert await placement.ok("GET", f"/allocations/{consumer}") == {"allocations": {}}
    first = await placement.allocate(
        consumer, {compute: {"VCPU": 2, "MEMORY_MB": 512}, storage: {"DISK_GB": 5}}
    )
    assert first.status_code == 204 and not first.content
    shown = await placement.ok("GET", f"/allocations/{consumer}")
    assert shown["allocations"][compute]["resources"] == {"VCPU": 2, "MEMORY_MB": 512}
    assert shown["allocations"][storage] == {"generation": 2, "resources": {"DISK_GB": 5}}
    assert (shown["project_id"], shown["user_id"]) == ("project-a", "user-a")
    assert (shown["consumer_generation"], shown["consumer_type"]) == (1, "INSTANCE")
    older = await placement.ok("GET", f"/allocations/{consumer}", version="1.27")
    assert "consumer_generation" not in older and "consumer_type" not in older
    oldest = await placement.ok("GET", f"/allocations/{consumer}", version="1.11")
    assert "project_id" not in oldest

    # A new consumer must say null; an existing one its current generation.
    stale = await placement.allocate(consumer, {compute: {"VCPU": 1}}, generation=None)
    assert stale.status_code == 409
    assert stale.json()["errors"][0]["code"] == "placement.concurrent_update"
    assert (
        await placement.allocate(consumer, {compute: {"VCPU": 1}}, generation=7)
    ).status_code == 409
    resized = await placement.allocate(consumer, {compute: {"VCPU": 4}}, generation=1)
    assert resized.status_code == 204
    usages = await placement.ok("GET", f"/resource_providers/{compute}/usages")
    assert usages["usages"] == {"VCPU": 4, "MEMORY_MB": 0}
    assert (await placement.ok("GET", f"/resource_providers/{storage}/usages"))["usages"] == {
        "DISK_GB": 0
    }
    on_provider = await placement.ok("GET", f"/resource_providers/{compute}/allocations")
    assert on_provider["allocations"] == {
        consumer: {"resources": {"VCPU": 4}, "consumer_generation": 2}
    }
    # An empty allocations object with the generation releases everything (1.28).
    released = await placement.allocate(consumer, {}, generation=2)
    assert released.status_code == 204
    assert await placement.ok("GET", f"/allocations/{consumer}") == {"allocations": {}}
    await placement.error("DELETE", f"/allocations/{consumer}", 404)
    # ...and the consumer is gone, so it starts again from null.
    assert (await placement.allocate(consumer, {compute: {"VCPU": 1}})).status_code == 204
    await placement.ok("DELETE", f"/allocations/{consumer}", 204)
    assert (await placement.ok("GET", f"/resource_providers/{compute}/usages"))["usages"][
        "VCPU"
    ] == 0


async def test_allocation_bodies_by_microversion(placement: Placement) -> None:
    rp = await placement.provider("cn", {"VCPU": 8})
    consumer = new_consumer()
    listed = {"allocations": [{"resource_provider": {"uuid": rp}, "resources": {"VCPU": 1}}]}
    await placement.ok("PUT", f"/allocations/{consumer}", 204, json=listed, version="1.0")
    owned = {**listed, "project_id": "p", "user_id": "u"}
    await placement.error("PUT", f"/allocations/{consumer}", 400, json=listed, version="1.8")
    await placement.ok("PUT", f"/allocations/{consumer}", 204, json=owned, version="1.8")
    keyed = {"allocations": {rp: {"resources": {"VCPU": 2}}}, "project_id": "p", "user_id": "u"}
    await placement.error("PUT", f"/allocations/{consumer}", 400, json=owned, version="1.12")
    await placement.ok("PUT", f"/allocations/{consumer}", 204, json=keyed, version="1.12")
    # From 1.28 the consumer generation is required, from 1.38 the consumer type.
    await placement.error("PUT", f"/allocations/{consumer}", 400, json=keyed, version="1.28")
    with_generation = {**keyed, "consumer_generation": 3}
    await placement.error(
        "PUT", f"/allocations/{consumer}", 400, json=with_generation, version="1.38"
    )
    mapped = {**with_generation, "mappings": {"": [rp]}}
    await placement.ok("PUT", f"/allocations/{consumer}", 204, json=mapped, version="1.34")
    typed = {**keyed, "consumer_generation": 4, "consumer_type": "MIGRATION"}
    await placement.ok("PUT", f"/allocations/{consumer}", 204, json=typed, version="1.38")
    bad = [
        {**typed, "allocations": {rp: {"resources": {"VCPU": 0}}}},
        {**typed, "allocations": {rp: {"resources": {}}}},
        {**typed, "allocations": {"nope": {"resources": {"VCPU": 1}}}},
        {**typed, "consumer_type": "lower"},
        {**typed, "project_id": ""},
        {**typed, "extra": 1},
        {**typed, "allocations": {str(uuid.uuid4()): {"resources": {"VCPU": 1}}}},
        {**typed, "allocations": {rp: {"resources": {"CUSTOM_NOPE": 1}}}},
    ]
    for body in bad:
        await placement.error("PUT", f"/allocations/{consumer}", 400, json=body)
    await placement.error("PUT", "/allocations/not-a-uuid", 400, json=typed)
    await placement.error("PUT", f"/allocations/{consumer}", 400, content=b"{",
                          headers={"Content-Type": "application/json"})  # fmt: skip


async def test_capacity_and_inventory_constraints(placement: Placement) -> None:
    rp = await placement.provider(
        "cn",
        {
            "VCPU": {"total": 4, "reserved": 1, "allocation_ratio": 2.0},
            "MEMORY_MB": {"total": 1024, "min_unit": 64, "max_unit": 512, "step_size": 64},
        },
    )
    # (4 - 1) * 2.0 = 6 VCPU.
    assert (await placement.allocate(new_consumer(), {rp: {"VCPU": 6}})).status_code == 204
    full = await placement.allocate(new_consumer(), {rp: {"VCPU": 1}})
    assert full.status_code == 409 and "exceed the capacity" in full.text
    for amount in (32, 576, 100):  # under min_unit, over max_unit, not a step
        refused = await placement.allocate(new_consumer(), {rp: {"MEMORY_MB": amount}})
        assert refused.status_code == 409 and "inventory constraints" in refused.text
    no_inventory = await placement.allocate(new_consumer(), {rp: {"DISK_GB": 1}})
    assert no_inventory.status_code == 409
    usages = await placement.ok("GET", f"/resource_providers/{rp}/usages")
    assert usages["usages"] == {"VCPU": 6, "MEMORY_MB": 0}  # failures took nothing


async def test_post_allocations_moves_between_consumers(placement: Placement) -> None:
    source = await placement.provider("source", {"VCPU": 4})
    target = await placement.provider("target", {"VCPU": 4})
    instance, migration = new_consumer(), new_consumer()
    assert (await placement.allocate(instance, {source: {"VCPU": 4}})).status_code == 204
    # The migration takes the source allocation; the instance claims on the target.
    move = {
        migration: {
            "allocations": {source: {"resources": {"VCPU": 4}}},
            "project_id": "project-a",
            "user_id": "user-a",
            "consumer_generation": None,
            "consumer_type": "MIGRATION",
        },
        instance: {
            "allocations": {target: {"resources": {"VCPU": 4}}},
            "project_id": "project-a",
            "user_id": "user-a",
            "consumer_generation": 1,
            "consumer_type": "INSTANCE",
        },
    }
    await placement.ok("POST", "/allocations", 204, json=move)
    assert list((await placement.ok("GET", f"/allocations/{migration}"))["allocations"]) == [source]
    assert list((await placement.ok("GET", f"/allocations/{instance}"))["allocations"]) == [target]
    # Confirm: the migration's allocation goes; a conflicting generation changes nothing.
    stale = {
        migration: {**move[migration], "allocations": {}, "consumer_generation": 1},
        instance: {**move[instance], "consumer_generation": 1},
    }
    await placement.error("POST", "/allocations", 409, json=stale)
    assert (await placement.ok("GET", f"/allocations/{migration}"))["allocations"]
    confirm = {migration: {**move[migration], "allocations": {}, "consumer_generation": 1}}
    await placement.ok("POST", "/allocations", 204, json=confirm)
    assert (await placement.ok("GET", f"/allocations/{migration}")) == {"allocations": {}}
    for rp, used in ((source, 0), (target, 4)):
        usage = await placement.ok("GET", f"/resource_providers/{rp}/usages")
        assert usage["usages"]["VCPU"] == used
    await placement.error("POST", "/allocations", 400, json={})
    await placement.error("POST", "/allocations", 405, json=move, version="1.12")


async def test_project_usages(placement: Placement) -> None:
    rp = await placement.provider("cn", {"VCPU": 16, "MEMORY_MB": 4096})
    for consumer_type, user, vcpu in (
        ("INSTANCE", "u1", 2),
        ("INSTANCE", "u2", 1),
        ("MIGRATION", "u1", 4),
    ):
        response = await placement.allocate(
            new_consumer(),
            {rp: {"VCPU": vcpu, "MEMORY_MB": 256}},
            project="p1",
            user=user,
            consumer_type=consumer_type,
        )
        assert response.status_code == 204
    await placement.ok(
        "PUT",
        f"/allocations/{new_consumer()}",
        204,
        version="1.28",
        json={
            "allocations": {rp: {"resources": {"VCPU": 1}}},
            "project_id": "p1",
            "user_id": "u3",
            "consumer_generation": None,
        },
    )
    assert await placement.ok("GET", "/usages?project_id=p1", version="1.9") == {
        "usages": {"VCPU": 8, "MEMORY_MB": 768}
    }
    assert await placement.ok("GET", "/usages?project_id=p1&user_id=u1", version="1.37") == {
        "usages": {"VCPU": 6, "MEMORY_MB": 512}
    }
    assert await placement.ok("GET", "/usages?project_id=p1") == {
        "usages": {
            "INSTANCE": {"consumer_count": 2, "VCPU": 3, "MEMORY_MB": 512},
            "MIGRATION": {"consumer_count": 1, "VCPU": 4, "MEMORY_MB": 256},
            "unknown": {"consumer_count": 1, "VCPU": 1},
        }
    }
    assert await placement.ok("GET", "/usages?project_id=p1&consumer_type=all") == {
        "usages": {"all": {"consumer_count": 4, "VCPU": 8, "MEMORY_MB": 768}}
    }
    assert await placement.ok("GET", "/usages?project_id=p1&consumer_type=MIGRATION") == {
        "usages": {"MIGRATION": {"consumer_count": 1, "VCPU": 4, "MEMORY_MB": 256}}
    }
    assert await placement.ok("GET", "/usages?project_id=nobody") == {"usages": {}}
    await placement.error("GET", "/usages", 400)
    await placement.error("GET", "/usages?project_id=p1&consumer_type=bad", 400)


async def test_member_cannot_touch_placement(placement: Placement) -> None:
    project_id, member = await placement.cloud.project_member(placement.token, "tenant")
    as_member = Placement(placement.cloud, member)
    await as_member.error("GET", "/resource_providers", 403)
    await as_member.error("POST", "/resource_providers", 403, json={"name": "x"})
    # A project's readers may read their own project's usages, not another's.
    await as_member.ok("GET", f"/usages?project_id={project_id}")
    await as_member.error("GET", "/usages?project_id=someone-else", 403)


async def race_for_the_last_unit(placement: Placement, claimers: int) -> list[int]:
    """``claimers`` concurrent claims of 1 VCPU on a provider with 1 free; their statuses."""
    rp = await placement.provider(None, {"VCPU": 2})
    assert (await placement.allocate(new_consumer(), {rp: {"VCPU": 1}})).status_code == 204
    responses = await asyncio.gather(
        *(placement.allocate(new_consumer(), {rp: {"VCPU": 1}}) for _ in range(claimers))
    )
    usages = await placement.ok("GET", f"/resource_providers/{rp}/usages")
    assert usages["usages"]["VCPU"] == 2
    return sorted(r.status_code for r in responses)


async def test_two_claims_on_the_last_unit(placement: Placement) -> None:
    assert await race_for_the_last_unit(placement, 2) == [204, 409]


async def test_many_concurrent_claims_never_oversubscribe(placement: Placement) -> None:
    hosts = [await placement.provider(f"cn{i}", {"VCPU": 3}) for i in range(3)]

    async def claim(host: str) -> int:
        return (await placement.allocate(new_consumer(), {host: {"VCPU": 1}})).status_code

    statuses = await asyncio.gather(*(claim(hosts[i % 3]) for i in range(24)))
    assert statuses.count(204) == 9 and statuses.count(409) == 15
    await assert_usage_matches_allocations(placement)


async def assert_usage_matches_allocations(placement: Placement) -> None:
    """Every inventory's ``used`` equals the sum of the allocations against it."""
    unit = placement.cloud.cloud.units["placement"]
    assert isinstance(unit, PlacementUnit)
    async with unit.service.db.session() as session:
        sums = dict(
            (
                (row[0], row[1]),
                row[2],
            )
            for row in await session.execute(
                select(
                    Allocation.resource_provider_id,
                    Allocation.resource_class_id,
                    func.sum(Allocation.used),
                ).group_by(Allocation.resource_provider_id, Allocation.resource_class_id)
            )
        )
        for inventory in await session.scalars(select(Inventory)):
            key = (inventory.resource_provider_id, inventory.resource_class_id)
            assert inventory.used == sums.get(key, 0), key


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
async def test_claim_race_on_server_databases(tmp_path: Path, backend: str) -> None:
    async with placement_cloud(tmp_path, database_url(backend, tmp_path)) as placement:
        assert await race_for_the_last_unit(placement, 2) == [204, 409]
        assert await race_for_the_last_unit(placement, 8) == [204] + [409] * 7
        await assert_usage_matches_allocations(placement)
        # Candidates (their SQL differs per backend): the full providers are not offered.
        spare = await placement.provider(None, {"VCPU": 2}, traits=["HW_CPU_X86_SSE"])
        found = await placement.ok(
            "GET", "/allocation_candidates?resources=VCPU:1&required=HW_CPU_X86_SSE&limit=5"
        )
        assert [list(r["allocations"]) for r in found["allocation_requests"]] == [[spare]]
        parent = await placement.provider(None, {"VCPU": 2})
        await placement.provider(None, {"DISK_GB": 10}, parent=parent)
        nested = await placement.ok("GET", "/allocation_candidates?resources=VCPU:1,DISK_GB:1")
        assert [r["mappings"][""] for r in nested["allocation_requests"]] != []
