"""What only a real broker shows: several processes, the wire format, reconnects.

The transport-neutral contract runs against RabbitMQ in test_bus_contract.py;
this module is skipped when the broker is unreachable (a failure under CI=true).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from onestack.core.bus import BusError, BusTimeout
from onestack.core.bus.amqp import EXCHANGE, AmqpBus
from tests.functional.test_bus_contract import Harness, Service, eventually, require_broker

pytestmark = pytest.mark.amqp

AMQP_URL = require_broker(allow_module_level=True)


@pytest.fixture
async def broker() -> AsyncIterator[Harness]:
    """Buses on the test broker, each one standing for a separate process."""
    harness = Harness(AMQP_URL)
    try:
        yield harness
    finally:
        await harness.close()


async def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl on this machine's broker node, skipping the test if that fails."""
    program = shutil.which("rabbitmqctl")
    if program is None:
        pytest.skip("rabbitmqctl is not installed here")
    try:
        done = await asyncio.to_thread(
            subprocess.run, [program, *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"rabbitmqctl {args[0]} failed: {exc}")
    if done.returncode != 0:
        pytest.skip(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[:300]}")
    return done.stdout


async def drop_connections(name: str) -> None:
    """Have the broker force-close the connections named ``name`` (only this test's, so
    other processes using the broker are left alone)."""
    listing = await rabbitmqctl(
        "-q", "list_connections", "--no-table-headers", "pid", "client_properties"
    )
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if name in line]
    if not pids:
        pytest.skip("rabbitmqctl does not list this test's connections (another broker?)")
    await asyncio.gather(*(rabbitmqctl("close_connection", pid, "test") for pid in pids))


class Outage:
    """A TCP proxy in front of the broker that can cut its connections and refuse new
    ones, to stage an outage without touching the broker."""

    def __init__(self, url: str) -> None:
        self.parts = urlsplit(url)
        self.down = False
        self.streams: set[asyncio.StreamWriter] = set()
        self.links: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> Outage:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        credentials, at, _ = self.parts.netloc.rpartition("@")
        self.url = self.parts._replace(netloc=f"{credentials}{at}127.0.0.1:{port}").geturl()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()
        await asyncio.gather(*self.links, return_exceptions=True)

    def cut(self) -> None:
        """Drop every proxied connection and refuse new ones."""
        self.down = True
        for stream in self.streams:
            stream.close()

    def restore(self) -> None:
        """Accept connections again."""
        self.down = False

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.links.add(task)
        try:
            if self.down:
                return
            upstream = await asyncio.open_connection(
                self.parts.hostname or "localhost", self.parts.port or 5672
            )
            self.streams |= {writer, upstream[1]}
            await asyncio.gather(self._pipe(reader, upstream[1]), self._pipe(upstream[0], writer))
        finally:
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass  # the other side was cut
        finally:
            writer.close()


async def test_processes_share_topics_and_casts_outlive_consumers(broker: Harness) -> None:
    client, first = await broker.bus(), await broker.bus()
    topic = broker.topic()
    await first.consume(topic, Service("first"))
    assert (await client.call(topic, "echo", value=1))["by"] == "first"
    await first.stop()
    await client.cast(topic, "record", value="while nobody listens")
    second = await broker.bus()
    successor = Service("second")
    await second.consume(topic, successor)
    await eventually(lambda: successor.seen == ["while nobody listens"])


async def test_a_handler_cut_short_by_stop_is_redelivered(broker: Harness) -> None:
    client, doomed, heir = await broker.bus(), await broker.bus(), await broker.bus()
    topic = broker.topic()
    interrupted = Service("doomed")
    await doomed.consume(topic, interrupted)
    await client.cast(topic, "block")
    await asyncio.wait_for(interrupted.started.wait(), 5)
    successor = Service("heir")
    successor.release.set()
    await heir.consume(topic, successor)
    await doomed.stop()
    assert interrupted.cancelled
    await eventually(lambda: successor.seen == ["unblocked"])


async def test_wire_format_is_json_with_correlated_replies(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    server = await broker.bus()
    topic = broker.topic()
    await server.consume(topic, Service())
    answered: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def on_reply(message: AbstractIncomingMessage) -> None:
        answered.set_result(message)

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        await replies.consume(on_reply, no_ack=True)
        exchange = await channel.get_exchange(EXCHANGE)
        with caplog.at_level(logging.ERROR, logger="onestack.bus"):
            for malformed in (b"not json", b'{"method": 5, "kwargs": {}}', b"[]"):
                await exchange.publish(aio_pika.Message(malformed), routing_key=topic)
            await eventually(lambda: caplog.text.count("dropping a malformed message") == 3)
        request = {"method": "echo", "kwargs": {"value": "raw"}}
        await exchange.publish(
            aio_pika.Message(
                json.dumps(request).encode(),
                content_type="application/json",
                correlation_id="abc",
                reply_to=replies.name,
            ),
            routing_key=topic,
        )
        reply = await asyncio.wait_for(answered, 5)
    assert (reply.content_type, reply.correlation_id) == ("application/json", "abc")
    assert json.loads(reply.body) == {"result": {"by": "service", "value": "raw"}}


async def test_calls_and_consumers_survive_dropped_connections(broker: Harness) -> None:
    name = f"onestack-test-{uuid.uuid4().hex[:12]}"
    server = await broker.bus(AmqpBus(AMQP_URL, name=name))
    client = await broker.bus(AmqpBus(AMQP_URL, name=name))
    topic = broker.topic()
    listener = Service("listener")
    await server.consume(topic, Service("server"))
    await server.consume(topic, listener, fanout=True)
    assert (await client.call(topic, "echo", value=1))["value"] == 1
    await drop_connections(name)
    # Sent while both connections are down: the publish waits for the reconnect.
    assert (await client.call(topic, "echo", timeout=15, value=2))["value"] == 2
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not listener.seen:  # a fan-out sent before the listener's queue is back is lost
        assert loop.time() < deadline, "the fan-out listener did not come back"
        await client.fanout(topic, "record", value="again")
        await asyncio.sleep(0.1)


async def test_unreachable_broker_fails_start_with_bus_error() -> None:
    bus = AmqpBus("amqp://guest:secret@127.0.0.1:1/", connect_timeout=2)
    with pytest.raises(BusError) as failure:
        await bus.start()
    assert "secret" not in str(failure.value)
    await bus.stop()


async def test_publishing_waits_out_an_outage_within_its_timeout(broker: Harness) -> None:
    server = await broker.bus()
    topic = broker.topic()
    service = Service()
    await server.consume(topic, service)
    async with Outage(AMQP_URL) as outage:
        client = await broker.bus(AmqpBus(outage.url))
        assert (await client.call(topic, "echo", value=0))["value"] == 0
        outage.cut()
        with pytest.raises(BusTimeout):
            await client.call(topic, "echo", timeout=0.5, value=1)
        cast = asyncio.create_task(client.cast(topic, "record", value="sent during the outage"))
        await asyncio.sleep(0.3)
        assert not cast.done()
        outage.restore()
        await asyncio.wait_for(cast, 10)
        await eventually(lambda: service.seen == ["sent during the outage"])
        assert (await client.call(topic, "echo", timeout=10, value=2))["value"] == 2
        outage.cut()
        waiting = asyncio.create_task(client.call(topic, "echo", timeout=30, value=3))
        await asyncio.sleep(0.2)
        await asyncio.wait_for(client.stop(), 5)
        with pytest.raises(BusError) as stopped:
            await asyncio.wait_for(waiting, 3)
        assert not isinstance(stopped.value, BusTimeout)
