"""The conductor's shared placement candidates: one query per period, usage consumed by
what this process chooses, dropped on refusal or error."""

from __future__ import annotations

import asyncio

import pytest

from onestack.compute.placement_client import Candidate, CandidatePool, PlacementError


class Placement:
    """Counts queries; answers two fresh candidates each time."""

    def __init__(self) -> None:
        self.queries = 0

    async def fetch(self) -> list[Candidate]:
        self.queries += 1
        await asyncio.sleep(0.01)
        return [Candidate("a", {"VCPU": 4}, {"VCPU": 0}), Candidate("b", {"VCPU": 4}, {})]


async def test_concurrent_requests_share_one_query_until_it_expires() -> None:
    placement, pool = Placement(), CandidatePool(ttl=0.2)
    answers = await asyncio.gather(*(pool.get("tiny", placement.fetch) for _ in range(5)))
    assert placement.queries == 1
    assert all(answer is answers[0] for answer in answers)
    await pool.get("other", placement.fetch)
    assert placement.queries == 2
    await asyncio.sleep(0.25)
    await pool.get("tiny", placement.fetch)
    assert placement.queries == 3


async def test_consume_counts_choices_and_drop_asks_again() -> None:
    placement, pool = Placement(), CandidatePool(ttl=60)
    candidates = await pool.get("tiny", placement.fetch)
    pool.consume("tiny", "a", {"VCPU": 2})
    pool.consume("tiny", "b", {"VCPU": 1})
    pool.consume("tiny", "a", {"VCPU": 1})
    assert [c.used for c in candidates] == [{"VCPU": 3}, {"VCPU": 1}]
    pool.consume("unknown", "a", {"VCPU": 1})
    pool.drop("tiny")
    fresh = await pool.get("tiny", placement.fetch)
    assert placement.queries == 2
    assert fresh[0].used == {"VCPU": 0}


async def test_a_failed_query_is_not_kept() -> None:
    pool = CandidatePool(ttl=60)
    calls = 0

    async def failing() -> list[Candidate]:
        nonlocal calls
        calls += 1
        raise PlacementError("down")

    for _ in range(2):
        with pytest.raises(PlacementError):
            await pool.get("tiny", failing)
    assert calls == 2
