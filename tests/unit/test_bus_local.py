"""In-process bus details beyond the shared contract (tests/functional/test_bus_contract.py),
and the transport choice of make_bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from onestack.core.bus import Bus, BusError, Consumer, make_bus
from onestack.core.bus.amqp import AmqpBus
from onestack.core.bus.local import InProcessBus


class Worker:
    """Records what it is sent; ``hold`` blocks until ``release`` is set."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.seen: list[Any] = []
        self.release = asyncio.Event()
        self.consumer: Consumer | None = None

    async def record(self, value: Any) -> str:
        self.seen.append(value)
        return self.label

    async def hold(self) -> None:
        await self.release.wait()

    async def quit(self) -> str:
        assert self.consumer is not None
        await self.consumer.stop()
        return "stopped"


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


@pytest.mark.parametrize("url", ["memory://", "", "memory:"])
def test_make_bus_in_process(url: str) -> None:
    assert isinstance(make_bus(url), InProcessBus)


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672/", "amqps://u:p@rabbit/"])
def test_make_bus_amqp_does_not_connect_yet(url: str) -> None:
    bus = make_bus(url)
    assert isinstance(bus, AmqpBus) and bus.url == url


def test_make_bus_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match=r"unsupported bus URL 'redis://x'.*memory://.*amqp://"):
        make_bus("redis://x")


async def test_round_robin_is_strict_and_skips_stopped_workers(bus: Bus) -> None:
    workers = [Worker(label) for label in "abc"]
    consumers = [await bus.consume("topic", worker) for worker in workers]
    answers = [await bus.call("topic", "record", value=i) for i in range(6)]
    assert answers == ["a", "b", "c", "a", "b", "c"]
    await consumers[1].stop()
    answers = [await bus.call("topic", "record", value=i) for i in range(4)]
    assert sorted(answers) == ["a", "a", "c", "c"]


async def test_queued_messages_reach_the_first_worker_in_order(bus: Bus) -> None:
    for i in range(5):
        await bus.cast("topic", "record", value=i)
    call = asyncio.create_task(bus.call("topic", "record", timeout=5, value="call"))
    await asyncio.sleep(0)
    first, second = Worker("first"), Worker("second")
    await bus.consume("topic", first)
    await bus.consume("topic", second)
    assert await call == "first"
    assert first.seen == [0, 1, 2, 3, 4, "call"] and second.seen == []


async def test_handler_may_stop_its_own_consumer(bus: Bus) -> None:
    worker = Worker("self-stopping")
    worker.consumer = await bus.consume("topic", worker)
    assert await asyncio.wait_for(bus.call("topic", "quit"), 2) == "stopped"
    await bus.cast("topic", "record", value="queued for a successor")
    assert worker.seen == []


async def test_stop_fails_queued_calls_drops_queued_casts_and_restarts_empty() -> None:
    bus = InProcessBus()
    await bus.start()
    held = Worker("held")
    await bus.consume("busy", held)
    await bus.cast("busy", "hold")
    await bus.cast("idle", "record", value="dropped")
    queued = asyncio.create_task(bus.call("idle", "record", timeout=30, value="never"))
    await asyncio.sleep(0)
    await asyncio.wait_for(bus.stop(), 1)
    with pytest.raises(BusError, match="stopped"):
        await queued
    current = asyncio.current_task()
    assert [task for task in asyncio.all_tasks() if task is not current] == []
    await bus.start()
    late = Worker("late")
    await bus.consume("idle", late)
    await asyncio.sleep(0.05)
    assert late.seen == []
    await bus.stop()
