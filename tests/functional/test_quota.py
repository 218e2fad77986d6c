"""Quota reservations on SQLite, PostgreSQL and MariaDB: concurrent requests never overshoot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from onestack.core.config import async_url
from onestack.core.db import Database, create_database_if_missing
from onestack.core.quota import QuotaEngine, QuotaExceeded, QuotaTables
from tests.backends import database_url

BACKENDS = ["sqlite", "postgresql", "mariadb"]


@pytest.fixture(params=BACKENDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QuotaEngine]:
    url = async_url(database_url(request.param, tmp_path))
    await create_database_if_missing(url)
    metadata = MetaData()
    tables = QuotaTables(metadata, "test")
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield QuotaEngine(db, tables, {"instances": 5, "cores": 20, "ram": -1})
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await db.close()


async def test_concurrent_reservations_never_exceed_the_limit(engine: QuotaEngine) -> None:
    async def attempt() -> bool:
        try:
            reservation = await engine.reserve("p1", {"instances": 1, "cores": 2})
        except QuotaExceeded:
            return False
        await engine.commit(reservation)
        return True

    results = await asyncio.gather(*(attempt() for _ in range(20)))
    assert sum(results) == 5
    usage = await engine.usage("p1")
    assert usage["instances"] == {"limit": 5, "in_use": 5, "reserved": 0}
    assert usage["cores"]["in_use"] == 10


async def test_failed_reservation_holds_nothing(engine: QuotaEngine) -> None:
    with pytest.raises(QuotaExceeded) as caught:
        await engine.reserve("p1", {"instances": 1, "cores": 21})
    assert "cores" in str(caught.value)
    usage = await engine.usage("p1")
    assert usage["instances"]["reserved"] == 0 and usage["cores"]["reserved"] == 0


async def test_rollback_release_and_limits(engine: QuotaEngine) -> None:
    reservation = await engine.reserve("p1", {"instances": 3})
    assert (await engine.usage("p1"))["instances"]["reserved"] == 3
    await engine.rollback(reservation)
    assert (await engine.usage("p1"))["instances"]["reserved"] == 0
    committed = await engine.reserve("p1", {"instances": 2})
    await engine.commit(committed)
    await engine.release("p1", {"instances": 5})
    assert (await engine.usage("p1"))["instances"]["in_use"] == 0
    await engine.set_limits("p1", {"instances": 1})
    await engine.commit(await engine.reserve("p1", {"instances": 1}))
    with pytest.raises(QuotaExceeded):
        await engine.reserve("p1", {"instances": 1})
    assert (await engine.limits("p2"))["instances"] == 5
    big = await engine.reserve("p1", {"ram": 10**9})
    await engine.commit(big)
    with pytest.raises(ValueError):
        await engine.set_limits("p1", {"bogus": 1})


async def test_expired_reservations_are_returned(engine: QuotaEngine) -> None:
    import datetime as dt

    engine.reservation_ttl = dt.timedelta(seconds=-1)
    await engine.reserve("p1", {"instances": 4})
    assert await engine.expire_stale() == 1
    assert (await engine.usage("p1"))["instances"]["reserved"] == 0
