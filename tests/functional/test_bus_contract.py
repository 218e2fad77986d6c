"""The bus contract, checked on both transports: in-process and RabbitMQ.

Every test here runs once per transport through the parametrized ``harness``
fixture; ``tests/functional/test_bus_amqp.py`` adds what only a broker can
show (several processes, reconnects) and ``tests/unit/test_bus_local.py``
what only the in-process bus can.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from onestack.core.bus import Bus, BusError, BusTimeout, RemoteError, make_bus
from onestack.core.bus.amqp import fanout_exchange_name, queue_name

AMQP_URL = os.environ.get("ONESTACK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def broker_problem(url: str = AMQP_URL) -> str | None:
    """Why the test broker cannot be used, or None when it accepts connections."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((host, port), timeout=1):
            return None
    except OSError as exc:
        return f"RabbitMQ is not reachable at {host}:{port} ({exc}); set ONESTACK_TEST_AMQP_URL"


def require_broker(*, allow_module_level: bool = False) -> str:
    """The test broker's URL; skip when it is down, but fail under CI=true (CI provides it)."""
    problem = broker_problem()
    if problem is None:
        return AMQP_URL
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}; CI must provide a broker", pytrace=False)
    pytest.skip(problem, allow_module_level=allow_module_level)


class Service:
    """A handler exposing one method per behaviour the tests need."""

    def __init__(self, label: str = "service") -> None:
        self.label = label
        self.seen: list[Any] = []
        self.hoard: list[int] = [1]
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = False

    async def echo(self, value: Any = None) -> dict[str, Any]:
        return {"by": self.label, "value": value}

    async def mutate(self, items: list[int]) -> list[int]:
        items.append(99)
        return items

    async def share(self) -> list[int]:
        return self.hoard

    async def fail(self) -> None:
        raise ValueError("bad input")

    async def unserializable(self) -> object:
        return object()

    async def record(self, value: Any) -> None:
        self.seen.append(value)

    async def sleep(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    async def block(self) -> str:
        """Run until the test sets ``release``."""
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.seen.append("unblocked")
        return "released"

    def synchronous(self) -> str:
        return "never dispatched: not a coroutine"

    async def _secret(self) -> str:
        return "never dispatched: private"


class Relay:
    """Forwards calls to another topic, as a conductor does to a compute agent."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self.bus = bus
        self.topic = topic

    async def relay(self, name: str) -> Any:
        return await self.bus.call(self.topic, name, timeout=5)


class Harness:
    """Buses and topics for one test; closing it stops the buses and removes
    what the test left on the broker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.buses: list[Bus] = []
        self.topics: list[str] = []

    async def bus(self, bus: Bus | None = None) -> Bus:
        """Start ``bus`` (by default a new one of this harness' transport); stopped at close."""
        bus = bus or make_bus(self.url)
        await bus.start()
        self.buses.append(bus)
        return bus

    def topic(self) -> str:
        """A topic no other test (or earlier run) uses."""
        name = f"test.{uuid.uuid4().hex[:12]}"
        self.topics.append(name)
        return name

    async def close(self) -> None:
        for bus in self.buses:
            await bus.stop()
        if self.url.startswith("amqp") and self.topics:
            connection = await aio_pika.connect(self.url)
            async with connection:
                channel = await connection.channel()
                for name in self.topics:
                    await channel.queue_delete(queue_name(name))
                    await channel.exchange_delete(fanout_exchange_name(name))


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A harness for each transport."""
    url = "memory://" if request.param == "memory" else require_broker()
    harness = Harness(url)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def bus(harness: Harness) -> Bus:
    """A started bus of the transport under test."""
    return await harness.bus()


@pytest.fixture
def topic(harness: Harness) -> str:
    """A fresh topic."""
    return harness.topic()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_call_returns_the_result(bus: Bus, topic: str) -> None:
    await bus.consume(topic, Service())
    assert await bus.call(topic, "echo", value=[1, "two"]) == {"by": "service", "value": [1, "two"]}


async def test_messages_are_json_copies(bus: Bus, topic: str) -> None:
    service = Service()
    await bus.consume(topic, service)
    sent = [1, 2]
    assert await bus.call(topic, "mutate", items=sent) == [1, 2, 99]
    assert sent == [1, 2]
    received = await bus.call(topic, "share")
    received.append(2)
    assert service.hoard == [1]
    assert (await bus.call(topic, "echo", value=(1, {2: "x"})))["value"] == [1, {"2": "x"}]
    with pytest.raises(TypeError):
        await bus.call(topic, "echo", value={1, 2})
    with pytest.raises(RemoteError) as unserializable:
        await bus.call(topic, "unserializable")
    assert unserializable.value.exc_type == "TypeError"


async def test_remote_failures_and_undispatchable_methods(bus: Bus, topic: str) -> None:
    await bus.consume(topic, Service())
    with pytest.raises(RemoteError) as failure:
        await bus.call(topic, "fail")
    assert (failure.value.exc_type, failure.value.message) == ("ValueError", "bad input")
    with pytest.raises(RemoteError) as bad_arguments:
        await bus.call(topic, "echo", unexpected=1)
    assert bad_arguments.value.exc_type == "TypeError"
    for method in ("nope", "_secret", "__init__", "synchronous", "label"):
        with pytest.raises(RemoteError) as unknown:
            await bus.call(topic, method)
        assert unknown.value.exc_type == "NoSuchMethod", method


async def test_a_failed_nested_call_keeps_its_error_type(
    harness: Harness, bus: Bus, topic: str
) -> None:
    inner = harness.topic()
    await bus.consume(inner, Service())
    await bus.consume(topic, Relay(bus, inner))
    assert await bus.call(topic, "relay", name="echo") == {"by": "service", "value": None}
    with pytest.raises(RemoteError) as failure:
        await bus.call(topic, "relay", name="fail")
    assert (failure.value.exc_type, failure.value.message) == ("ValueError", "bad input")


async def test_call_without_consumer_times_out_and_is_never_run(bus: Bus, topic: str) -> None:
    with pytest.raises(BusTimeout):
        await bus.call(topic, "record", timeout=0.3, value="expired")
    service = Service()
    await bus.consume(topic, service)
    await bus.cast(topic, "record", value="after")
    await eventually(lambda: service.seen == ["after"])


async def test_call_waits_for_a_late_consumer(bus: Bus, topic: str) -> None:
    call = asyncio.create_task(bus.call(topic, "echo", timeout=5, value="early"))
    await asyncio.sleep(0.2)
    assert not call.done()
    await bus.consume(topic, Service())
    assert (await call)["value"] == "early"


async def test_slow_handler_times_out_and_its_late_reply_is_dropped(bus: Bus, topic: str) -> None:
    await bus.consume(topic, Service())
    with pytest.raises(BusTimeout):
        await bus.call(topic, "sleep", timeout=0.2, seconds=0.4)
    await asyncio.sleep(0.4)
    assert await bus.call(topic, "echo", value="next") == {"by": "service", "value": "next"}


async def test_handlers_run_concurrently(bus: Bus, topic: str) -> None:
    service = Service()
    await bus.consume(topic, service)
    blocked = asyncio.create_task(bus.call(topic, "block", timeout=5))
    await asyncio.wait_for(service.started.wait(), 5)
    assert (await bus.call(topic, "echo", timeout=5, value=1))["value"] == 1
    service.release.set()
    assert await blocked == "released"


async def test_cast_waits_for_a_late_consumer(bus: Bus, topic: str) -> None:
    await bus.cast(topic, "record", value="early")
    service = Service()
    await bus.consume(topic, service)
    await eventually(lambda: service.seen == ["early"])


async def test_competing_consumers_share_the_work(bus: Bus, topic: str) -> None:
    first, second = Service("a"), Service("b")
    await bus.consume(topic, first)
    await bus.consume(topic, second)
    answers = await asyncio.gather(*(bus.call(topic, "echo", value=i) for i in range(20)))
    assert sorted(answer["value"] for answer in answers) == list(range(20))
    assert {answer["by"] for answer in answers} == {"a", "b"}
    for i in range(20):
        await bus.cast(topic, "record", value=i)
    await eventually(lambda: len(first.seen) + len(second.seen) == 20)
    assert sorted(first.seen + second.seen) == list(range(20))
    assert first.seen and second.seen


async def test_fanout_reaches_every_listener_and_no_worker(bus: Bus, topic: str) -> None:
    listeners = [Service(str(i)) for i in range(3)]
    for listener in listeners:
        await bus.consume(topic, listener, fanout=True)
    worker = Service("worker")
    await bus.consume(topic, worker)
    await bus.fanout(topic, "record", value="hello")
    await eventually(lambda: all(listener.seen == ["hello"] for listener in listeners))
    await asyncio.sleep(0.1)
    assert worker.seen == []


async def test_fanout_without_listeners_is_dropped(bus: Bus, topic: str) -> None:
    await bus.fanout(topic, "record", value="nobody")
    late, witness = Service("late"), Service("witness")
    await bus.consume(topic, late, fanout=True)
    await bus.consume(topic, witness, fanout=True)
    await bus.fanout(topic, "record", value="now")
    await eventually(lambda: witness.seen == ["now"])
    assert late.seen == ["now"]


async def test_cast_and_fanout_failures_are_logged_and_swallowed(
    bus: Bus, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service()
    await bus.consume(topic, service)
    await bus.consume(topic, service, fanout=True)
    with caplog.at_level(logging.ERROR, logger="onestack.bus"):
        await bus.cast(topic, "fail")
        await bus.fanout(topic, "nope")
        await eventually(lambda: len(caplog.records) == 2)
    messages = sorted(record.getMessage() for record in caplog.records)
    assert messages == [f"cast {topic}.fail failed", f"fanout {topic}.nope failed"]
    assert await bus.call(topic, "echo", value="still serving") == {
        "by": "service",
        "value": "still serving",
    }


async def test_consumer_stop_lets_handlers_finish_and_takes_nothing_more(
    bus: Bus, topic: str
) -> None:
    service = Service()
    consumer = await bus.consume(topic, service)
    await bus.cast(topic, "block")
    await asyncio.wait_for(service.started.wait(), 5)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()
    service.release.set()
    await stopping
    assert service.seen == ["unblocked"]
    await bus.cast(topic, "record", value="for the next consumer")
    successor = Service()
    await bus.consume(topic, successor)
    await eventually(lambda: successor.seen == ["for the next consumer"])
    assert service.seen == ["unblocked"]


async def test_stopped_listener_gets_nothing_more(bus: Bus, topic: str) -> None:
    service, witness = Service(), Service()
    listener = await bus.consume(topic, service, fanout=True)
    await bus.consume(topic, witness, fanout=True)
    await listener.stop()
    await listener.stop()  # idempotent
    await bus.fanout(topic, "record", value="late")
    await eventually(lambda: witness.seen == ["late"])
    assert service.seen == []


async def test_bus_stop_cancels_handlers_and_fails_waiting_calls(bus: Bus, topic: str) -> None:
    service = Service()
    await bus.consume(topic, service)
    call = asyncio.create_task(bus.call(topic, "block", timeout=30))
    await asyncio.wait_for(service.started.wait(), 5)
    await asyncio.wait_for(bus.stop(), 5)
    with pytest.raises(BusError) as stopped:
        await asyncio.wait_for(call, 1)
    assert not isinstance(stopped.value, BusTimeout)
    assert service.cancelled
    await bus.stop()  # idempotent
    with pytest.raises(BusError):
        await bus.cast(topic, "record", value="after stop")


async def test_unstarted_bus_refuses_work(harness: Harness, topic: str) -> None:
    bus = make_bus(harness.url)
    with pytest.raises(BusError):
        await bus.call(topic, "echo", timeout=1)
    with pytest.raises(BusError):
        await bus.cast(topic, "echo")
    with pytest.raises(BusError):
        await bus.fanout(topic, "echo")
    with pytest.raises(BusError):
        await bus.consume(topic, Service())
    await bus.stop()
