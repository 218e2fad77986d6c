"""Service records: heartbeats make agents up, silence makes them down."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import MetaData

from onestack.core.config import async_url
from onestack.core.db import Database
from onestack.core.heartbeat import PeriodicTask, ServiceRegistry, ServiceTables
from tests.backends import database_url


async def test_heartbeats_up_down_disable(tmp_path: Path) -> None:
    metadata = MetaData()
    tables = ServiceTables(metadata, "test")
    db = Database(async_url(database_url("sqlite", tmp_path)))
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    registry = ServiceRegistry(db, tables, down_after=0.3)
    await asyncio.gather(*(registry.record("host1", "onestack-compute") for _ in range(5)))
    await registry.record("host2", "onestack-compute")
    records = await registry.list()
    assert [(r.host, r.up) for r in records] == [("host1", True), ("host2", True)]
    await asyncio.sleep(0.4)
    await registry.record("host2", "onestack-compute")
    states = {r.host: r.up for r in await registry.list()}
    assert states == {"host1": False, "host2": True}
    host2 = next(r for r in await registry.list() if r.host == "host2")
    assert await registry.set_state(host2.id, disabled=True, disabled_reason="maintenance")
    assert await registry.set_state(host2.id, forced_down=True)
    host2 = next(r for r in await registry.list(host="host2"))
    assert host2.disabled and host2.disabled_reason == "maintenance" and not host2.up
    assert not await registry.set_state("missing", disabled=True)
    await db.close()


async def test_periodic_task_runs_survives_errors_and_stops() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("one bad run")

    task = PeriodicTask("t", 0.01, work, initial_delay=0)
    task.start()
    await asyncio.sleep(0.1)
    await task.stop()
    seen = len(calls)
    assert seen >= 4
    await asyncio.sleep(0.05)
    assert len(calls) == seen
