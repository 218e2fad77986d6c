"""The bus over RabbitMQ (aio-pika), for services and agents in separate processes and hosts.

Layout: one durable direct exchange ``onestack``; per topic a durable queue
``onestack.<topic>`` that its consumers share (casts and calls wait there
until someone consumes); per fan-out topic a fanout exchange with one
exclusive queue per listener; per bus instance one exclusive reply queue for
calls. ``connect_robust`` reconnects after a broker restart and restores the
declarations and consumers; publishes made while the broker is away are
retried until the call's deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError

from onestack.core.bus.base import (
    DEFAULT_CALL_TIMEOUT,
    Bus,
    BusError,
    BusTimeout,
    Consumer,
    RemoteError,
)
from onestack.core.bus.local import dispatch

log = logging.getLogger("onestack.bus")

EXCHANGE = "onestack"
PREFETCH = 64
PUBLISH_RETRY = 0.25


class _AmqpConsumer(Consumer):
    def __init__(self, queue: AbstractQueue, tag: str, bus: AmqpBus, exclusive: bool):
        self.queue = queue
        self.tag = tag
        self.bus = bus
        self.exclusive = exclusive

    async def stop(self) -> None:
        try:
            await self.queue.cancel(self.tag)
            if self.exclusive:
                await self.queue.delete(if_unused=False, if_empty=False)
        except (AMQPError, RuntimeError, ConnectionError):
            log.debug("consumer on %s already gone", self.queue.name)
        self.bus._consumers.discard(self)


class AmqpBus(Bus):
    """RPC and fan-out over RabbitMQ with the same contract as the in-process bus."""

    def __init__(self, url: str, *, connect_timeout: float = 30.0):
        self.url = url
        self.connect_timeout = connect_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._fanouts: dict[str, AbstractExchange] = {}
        self._declared: set[str] = set()
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._reply_queue = f"onestack.reply.{uuid.uuid4().hex}"
        self._consumers: set[_AmqpConsumer] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._connection is not None:
                return
            self._connection = await asyncio.wait_for(
                aio_pika.connect_robust(self.url), self.connect_timeout
            )
            channel = await self._connection.channel()
            assert isinstance(channel, aio_pika.RobustChannel)
            self._channel = channel
            await channel.set_qos(prefetch_count=PREFETCH)
            self._exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
            )
            replies = await channel.declare_queue(
                self._reply_queue, exclusive=True, auto_delete=True
            )
            await replies.consume(self._on_reply, no_ack=True)

    async def stop(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BusError("bus stopped"))
        self._replies.clear()
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = self._exchange = None
        self._declared.clear()
        self._fanouts.clear()

    def _ready(self) -> tuple[AbstractRobustChannel, AbstractExchange]:
        if self._channel is None or self._exchange is None:
            raise BusError("the AMQP bus is not started")
        return self._channel, self._exchange

    async def _topic_queue(self, topic: str) -> AbstractQueue:
        channel, exchange = self._ready()
        queue = await channel.declare_queue(f"{EXCHANGE}.{topic}", durable=True)
        if topic not in self._declared:
            await queue.bind(exchange, routing_key=topic)
            self._declared.add(topic)
        return queue

    async def _fanout_exchange(self, topic: str) -> AbstractExchange:
        channel, _ = self._ready()
        if topic not in self._fanouts:
            self._fanouts[topic] = await channel.declare_exchange(
                f"{EXCHANGE}.fanout.{topic}", aio_pika.ExchangeType.FANOUT, durable=True
            )
        return self._fanouts[topic]

    async def _publish(
        self, exchange: AbstractExchange, message: aio_pika.Message, key: str, deadline: float
    ) -> None:
        """Publish, retrying while the robust connection is re-establishing itself."""
        while True:
            try:
                await exchange.publish(message, routing_key=key)
                return
            except (AMQPError, ConnectionError, RuntimeError) as exc:
                if time.monotonic() + PUBLISH_RETRY >= deadline:
                    raise BusError(f"could not publish to {key}: {exc}") from exc
                await asyncio.sleep(PUBLISH_RETRY)

    @staticmethod
    def _body(method: str, kwargs: dict[str, Any]) -> bytes:
        return json.dumps({"method": method, "kwargs": kwargs}).encode()

    async def call(
        self, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        _, exchange = self._ready()
        deadline = time.monotonic() + timeout
        await self._topic_queue(topic)
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = future
        message = aio_pika.Message(
            self._body(method, kwargs),
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
            # A call nobody took in time is dropped by the broker rather than run late.
            expiration=max(timeout, 0.001),
        )
        try:
            await self._publish(exchange, message, topic, deadline)
            return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise BusTimeout(f"no reply from {topic}.{method} within {timeout}s") from None
        finally:
            self._replies.pop(correlation_id, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._replies.get(message.correlation_id or "")
        if future is None or future.done():
            return  # a reply that arrived after its call gave up
        body = json.loads(message.body)
        if "error" in body:
            future.set_exception(RemoteError(body["error"]["type"], body["error"]["message"]))
        else:
            future.set_result(body.get("result"))

    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        _, exchange = self._ready()
        await self._topic_queue(topic)
        message = aio_pika.Message(
            self._body(method, kwargs),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._publish(exchange, message, topic, time.monotonic() + DEFAULT_CALL_TIMEOUT)

    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        exchange = await self._fanout_exchange(topic)
        message = aio_pika.Message(self._body(method, kwargs), content_type="application/json")
        await self._publish(exchange, message, "", time.monotonic() + DEFAULT_CALL_TIMEOUT)

    async def consume(self, topic: str, handler: object, *, fanout: bool = False) -> Consumer:
        channel, _ = self._ready()
        if fanout:
            exchange = await self._fanout_exchange(topic)
            queue = await channel.declare_queue(
                f"{EXCHANGE}.fanout.{topic}.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
            )
            await queue.bind(exchange)
        else:
            queue = await self._topic_queue(topic)

        async def on_message(message: AbstractIncomingMessage) -> None:
            async with message.process(requeue=False, ignore_processed=True):
                await self._handle(handler, topic, message)

        tag = await queue.consume(on_message)
        consumer = _AmqpConsumer(queue, tag, self, exclusive=fanout)
        self._consumers.add(consumer)
        return consumer

    async def _handle(self, handler: object, topic: str, message: AbstractIncomingMessage) -> None:
        try:
            request = json.loads(message.body)
            result: Any = await dispatch(handler, request["method"], request.get("kwargs", {}))
            reply: dict[str, Any] = {"result": result}
        except RemoteError as exc:
            reply = {"error": {"type": exc.exc_type, "message": exc.message}}
        except Exception as exc:
            if not message.reply_to:
                log.exception("handling a message on %s failed", topic)
            reply = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        if message.reply_to and self._channel is not None:
            response = aio_pika.Message(
                json.dumps(reply).encode(),
                content_type="application/json",
                correlation_id=message.correlation_id,
            )
            try:
                await self._channel.default_exchange.publish(response, routing_key=message.reply_to)
            except (AMQPError, ConnectionError, RuntimeError):
                log.warning("could not reply to a call on %s", topic)
        elif "error" in reply:
            log.error("%s: %s", topic, reply["error"])
