"""The bus contract, checked on both transports: in-process and RabbitMQ."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from onestack.core.bus import Bus, BusTimeout, RemoteError, make_bus
from tests.backends import amqp_url


class Echo:
    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.seen: list[Any] = []
        self.event = asyncio.Event()

    async def echo(self, value: Any) -> Any:
        return {"by": self.name, "value": value}

    async def mutate(self, items: list[int]) -> list[int]:
        items.append(99)
        return items

    async def fail(self) -> None:
        raise ValueError("bad input")

    async def record(self, value: Any) -> None:
        self.seen.append(value)
        self.event.set()

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async def _secret(self) -> str:
        return "never"


@pytest.fixture(params=["memory", "amqp"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    url = "memory://" if request.param == "memory" else amqp_url()
    instance = make_bus(url)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


def topic() -> str:
    return f"test.{uuid.uuid4().hex[:10]}"


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_call_returns_the_result(bus: Bus) -> None:
    name = topic()
    await bus.consume(name, Echo())
    assert await bus.call(name, "echo", value=[1, "two"]) == {"by": "echo", "value": [1, "two"]}


async def test_messages_are_copies(bus: Bus) -> None:
    name = topic()
    await bus.consume(name, Echo())
    sent = [1, 2]
    assert await bus.call(name, "mutate", items=sent) == [1, 2, 99]
    assert sent == [1, 2]


async def test_remote_failures_and_unknown_methods(bus: Bus) -> None:
    name = topic()
    await bus.consume(name, Echo())
    with pytest.raises(RemoteError) as failure:
        await bus.call(name, "fail")
    assert failure.value.exc_type == "ValueError" and "bad input" in failure.value.message
    for method in ("nope", "_secret"):
        with pytest.raises(RemoteError) as unknown:
            await bus.call(name, method)
        assert unknown.value.exc_type == "NoSuchMethod"


async def test_call_times_out_without_consumer_or_when_slow(bus: Bus) -> None:
    with pytest.raises(BusTimeout):
        await bus.call(topic(), "echo", timeout=0.3, value=1)
    name = topic()
    await bus.consume(name, Echo())
    with pytest.raises(BusTimeout):
        await bus.call(name, "slow", timeout=0.2, seconds=1)


async def test_cast_waits_for_a_late_consumer(bus: Bus) -> None:
    name = topic()
    await bus.cast(name, "record", value="early")
    handler = Echo()
    await bus.consume(name, handler)
    await wait_for(lambda: handler.seen == ["early"])


async def test_competing_consumers_share_the_work(bus: Bus) -> None:
    name = topic()
    first, second = Echo("a"), Echo("b")
    await bus.consume(name, first)
    await bus.consume(name, second)
    answers = await asyncio.gather(*(bus.call(name, "echo", value=i) for i in range(20)))
    assert sorted(a["value"] for a in answers) == list(range(20))
    assert {a["by"] for a in answers} == {"a", "b"}


async def test_fanout_reaches_every_listener(bus: Bus) -> None:
    name = topic()
    listeners = [Echo(str(i)) for i in range(3)]
    for listener in listeners:
        await bus.consume(name, listener, fanout=True)
    await bus.fanout(name, "record", value="hello")
    await wait_for(lambda: all(listener.seen == ["hello"] for listener in listeners))


async def test_stopped_consumer_gets_nothing_more(bus: Bus) -> None:
    name = topic()
    handler = Echo()
    consumer = await bus.consume(name, handler, fanout=True)
    await consumer.stop()
    await bus.fanout(name, "record", value="late")
    await asyncio.sleep(0.2)
    assert handler.seen == []


async def test_amqp_bus_recovers_after_connections_are_dropped() -> None:
    url = amqp_url()
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    server, client = make_bus(url), make_bus(url)
    await server.start()
    await client.start()
    try:
        name = topic()
        await server.consume(name, Echo())
        assert (await client.call(name, "echo", value=1))["value"] == 1
        try:
            done = subprocess.run(
                [rabbitmqctl, "close_all_connections", "test"], capture_output=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot drop broker connections here: {exc}")
        if done.returncode != 0:
            pytest.skip(f"rabbitmqctl failed: {done.stderr.decode()[:200]}")
        result = None
        for _ in range(60):
            try:
                result = await client.call(name, "echo", timeout=2, value=2)
                break
            except Exception:
                await asyncio.sleep(0.25)
        assert result is not None and result["value"] == 2
    finally:
        await client.stop()
        await server.stop()
