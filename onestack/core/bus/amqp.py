"""The bus over RabbitMQ (aio-pika), for services and agents in separate processes and hosts.

Layout on the broker:

- one durable direct exchange ``onestack``; per topic a durable queue
  ``onestack.<topic>`` bound to it with the topic as routing key, shared by
  the topic's consumers (competing consumers). Casts and calls wait there
  until someone consumes; calls carry their timeout as a message TTL so a
  call its caller gave up on is dropped rather than run late.
- per fan-out topic a durable fanout exchange ``onestack.fanout.<topic>``
  and one exclusive, auto-deleted queue per listener.
- per bus instance one exclusive reply queue ``onestack.reply.<uuid>``;
  replies find their call by correlation id, late ones are dropped.

``connect_robust`` reconnects after a broker restart and re-declares the
queues, bindings and consumers. Publishing while it does so waits for the
connection (bounded by the call timeout, or :data:`PUBLISH_TIMEOUT` for
casts and fan-outs). A publish interrupted by a disconnect is retried, so
delivery is at least once. Handlers run concurrently, up to
:data:`PREFETCH` per consumer, and a message is acknowledged once handled:
a handler interrupted by a disconnect or :meth:`AmqpBus.stop` is cancelled
and its message redelivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

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

T = TypeVar("T")

EXCHANGE = "onestack"
JSON = "application/json"
PREFETCH = 64
RECONNECT_INTERVAL = 1.0
PUBLISH_TIMEOUT = DEFAULT_CALL_TIMEOUT
BROKER_TIMEOUT = 10.0
READY_POLL = 1.0
RETRY_DELAY = 0.1

# Reply futures only ever get results (the reply body, or this when stop() ends the call):
# an exception set on one nobody awaits yet (its call still publishing) would be reported
# as never retrieved.
_STOPPED = object()

# The connection is down or being restored: worth retrying once it is back.
_TRANSIENT = (ConnectionError, ChannelInvalidStateError)


def queue_name(topic: str) -> str:
    """The durable queue shared by the consumers of ``topic``."""
    return f"{EXCHANGE}.{topic}"


def fanout_exchange_name(topic: str) -> str:
    """The fanout exchange that reaches every listener of ``topic``."""
    return f"{EXCHANGE}.fanout.{topic}"


def _encode(method: str, kwargs: dict[str, Any]) -> bytes:
    return json.dumps({"method": method, "kwargs": kwargs}).encode()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class _AmqpConsumer(Consumer):
    def __init__(
        self,
        bus: AmqpBus,
        topic: str,
        handler: object,
        queue: AbstractRobustQueue,
        fanout: bool,
    ):
        self.bus = bus
        self.topic = topic
        self.handler = handler
        self.queue = queue
        self.fanout = fanout
        self.tag = ""
        self.tasks: set[asyncio.Task[Any]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # aiormq runs each delivery in its own task; tracking them lets stop() wait or cancel.
        if self.bus._stopping:
            return  # left unacknowledged: the broker requeues it when we disconnect
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.bus._handle(self, message)
        finally:
            self.tasks.discard(task)

    async def stop(self) -> None:
        """Cancel the subscription, then wait for the handlers already running."""
        if self not in self.bus._consumers:
            return
        self.bus._consumers.discard(self)
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                await self.queue.cancel(self.tag)
        except (TimeoutError, AMQPError, *_TRANSIENT) as exc:
            # The robust queue forgot the tag already, so a reconnect will not restore it.
            log.warning("could not cancel the consumer on %s: %s", self.queue.name, exc)
        running = self.tasks - {asyncio.current_task()}
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if self.fanout:
            try:
                async with asyncio.timeout(BROKER_TIMEOUT):
                    await self.queue.delete(if_unused=False, if_empty=False)
            except (TimeoutError, AMQPError, *_TRANSIENT) as exc:
                log.debug("fan-out queue %s not deleted: %s", self.queue.name, exc)


class AmqpBus(Bus):
    """RPC and fan-out over RabbitMQ with the same contract as the in-process bus.

    ``name`` labels the connection on the broker (management UI,
    ``rabbitmqctl list_connections client_properties``). A
    ``reconnect_interval`` query parameter in ``url`` overrides the default
    of :data:`RECONNECT_INTERVAL` seconds.
    """

    def __init__(self, url: str, *, name: str | None = None, connect_timeout: float = 30.0):
        self.url = url
        self.name = name or f"onestack {socket.gethostname()} pid {os.getpid()}"
        self.connect_timeout = connect_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractRobustExchange | None = None
        self._topics: dict[str, AbstractRobustQueue] = {}
        self._fanouts: dict[str, AbstractRobustExchange] = {}
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._reply_queue = f"{EXCHANGE}.reply.{uuid.uuid4().hex}"
        self._consumers: set[_AmqpConsumer] = set()
        self._lifecycle = asyncio.Lock()
        self._declaring = asyncio.Lock()
        self._stopping = False

    async def start(self) -> None:
        """Connect, declare the exchange and start listening for replies; idempotent."""
        async with self._lifecycle:
            if self._connection is not None:
                return
            options: dict[str, Any] = {}
            if "reconnect_interval" not in parse_qs(urlsplit(self.url).query):
                options["reconnect_interval"] = RECONNECT_INTERVAL
            try:
                connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=self.connect_timeout,
                    client_properties={"connection_name": self.name},
                    **options,
                )
            except (OSError, AMQPError) as exc:
                raise BusError(f"cannot connect to {_redact(self.url)}: {exc!r}") from exc
            try:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=PREFETCH)
                exchange = await channel.declare_exchange(
                    EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
                )
                replies = await channel.declare_queue(
                    self._reply_queue, exclusive=True, auto_delete=True
                )
                await replies.consume(self._on_reply, no_ack=True)
            except BaseException:
                await connection.close()
                raise
            self._connection, self._channel, self._exchange = connection, channel, exchange
            self._stopping = False

    async def stop(self) -> None:
        """Cancel the handlers still running (their messages are redelivered), then disconnect.

        Calls still waiting for a reply fail with :class:`BusError`.
        """
        async with self._lifecycle:
            connection = self._connection
            if connection is None:
                return
            self._stopping = True
            tasks = [task for consumer in self._consumers for task in consumer.tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_result(_STOPPED)
            self._replies.clear()
            self._consumers.clear()
            self._topics.clear()
            self._fanouts.clear()
            self._connection = self._channel = self._exchange = None
            await connection.close()

    def _ready(self) -> tuple[AbstractRobustChannel, AbstractRobustExchange]:
        if self._channel is None or self._exchange is None:
            raise BusError("the AMQP bus is not started")
        return self._channel, self._exchange

    async def _when_connected(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` once the connection is up, again if it drops meanwhile.

        Callers bound the wait with a timeout. Errors the broker answers with
        (not connection losses) become :class:`BusError`.
        """
        while True:
            channel, _ = self._ready()
            try:
                # Polled rather than awaited outright, so that stop() ends the wait.
                await asyncio.wait_for(channel.ready(), READY_POLL)
                return await operation()
            except (*_TRANSIENT, TimeoutError) as exc:
                log.debug("waiting for the broker: %r", exc)
            except AMQPError as exc:
                raise BusError(f"the broker refused: {exc!r}") from exc
            await asyncio.sleep(RETRY_DELAY)

    async def _topic_queue(self, topic: str) -> AbstractRobustQueue:
        """The topic's queue, declared and bound once per bus (redeclaring would pile
        up copies in the robust channel's restore list)."""
        queue = self._topics.get(topic)
        if queue is not None:
            return queue
        async with self._declaring:
            if topic not in self._topics:
                channel, exchange = self._ready()

                async def declare() -> AbstractRobustQueue:
                    declared = await channel.declare_queue(queue_name(topic), durable=True)
                    await declared.bind(exchange, routing_key=topic)
                    return declared

                self._topics[topic] = await self._when_connected(declare)
            return self._topics[topic]

    async def _fanout_exchange(self, topic: str) -> AbstractRobustExchange:
        exchange = self._fanouts.get(topic)
        if exchange is not None:
            return exchange
        async with self._declaring:
            if topic not in self._fanouts:
                channel, _ = self._ready()
                self._fanouts[topic] = await self._when_connected(
                    lambda: channel.declare_exchange(
                        fanout_exchange_name(topic), aio_pika.ExchangeType.FANOUT, durable=True
                    )
                )
            return self._fanouts[topic]

    async def _publish(
        self, exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
    ) -> None:
        await self._when_connected(
            lambda: exchange.publish(message, routing_key=routing_key, mandatory=False)
        )

    async def call(
        self, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        """Invoke ``method`` on one consumer of ``topic`` and return its result."""
        _, exchange = self._ready()
        body = _encode(method, kwargs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        correlation_id = uuid.uuid4().hex
        reply: asyncio.Future[Any] = loop.create_future()
        self._replies[correlation_id] = reply
        try:
            async with asyncio.timeout_at(deadline):
                await self._topic_queue(topic)
                message = aio_pika.Message(
                    body,
                    content_type=JSON,
                    correlation_id=correlation_id,
                    reply_to=self._reply_queue,
                    expiration=max(deadline - loop.time(), 0.001),
                )
                await self._publish(exchange, message, topic)
                answer = await reply
        except TimeoutError:
            raise BusTimeout(f"no reply from {topic}.{method} within {timeout}s") from None
        finally:
            self._replies.pop(correlation_id, None)
        if answer is _STOPPED:
            raise BusError("the bus stopped before the call was answered")
        return self._decode_reply(answer)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        reply = self._replies.get(message.correlation_id or "")
        if reply is not None and not reply.done():  # else its call gave up already
            reply.set_result(message.body)

    @staticmethod
    def _decode_reply(body: bytes) -> Any:
        try:
            answer = json.loads(body)
            if "error" not in answer:
                return answer["result"]
            error = RemoteError(answer["error"]["type"], answer["error"]["message"])
        except (ValueError, KeyError, TypeError):
            raise BusError(f"malformed reply: {body[:200]!r}") from None
        raise error

    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        """Queue ``method`` for one consumer of ``topic``; it survives a broker restart."""
        _, exchange = self._ready()
        message = aio_pika.Message(
            _encode(method, kwargs),
            content_type=JSON,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._topic_queue(topic)
                await self._publish(exchange, message, topic)
        except TimeoutError:
            raise BusError(f"cast {topic}.{method}: the broker is unreachable") from None

    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        """Deliver ``method`` to every current listener of ``topic`` (none: dropped)."""
        self._ready()
        message = aio_pika.Message(_encode(method, kwargs), content_type=JSON)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                exchange = await self._fanout_exchange(topic)
                await self._publish(exchange, message, "")
        except TimeoutError:
            raise BusError(f"fanout {topic}.{method}: the broker is unreachable") from None

    async def consume(self, topic: str, handler: object, *, fanout: bool = False) -> Consumer:
        """Dispatch ``topic`` to ``handler``; the subscription survives reconnects."""
        channel, _ = self._ready()
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                queue: AbstractRobustQueue
                if fanout:
                    exchange = await self._fanout_exchange(topic)

                    async def declare() -> AbstractRobustQueue:
                        declared = await channel.declare_queue(
                            f"{fanout_exchange_name(topic)}.{uuid.uuid4().hex}",
                            exclusive=True,
                            auto_delete=True,
                        )
                        await declared.bind(exchange)
                        return declared

                    queue = await self._when_connected(declare)
                else:
                    queue = await self._topic_queue(topic)
                consumer = _AmqpConsumer(self, topic, handler, queue, fanout)
                consumer.tag = await self._when_connected(
                    lambda: queue.consume(consumer.on_message)
                )
        except TimeoutError:
            raise BusError(f"consume {topic}: the broker is unreachable") from None
        self._consumers.add(consumer)
        return consumer

    async def _handle(self, consumer: _AmqpConsumer, message: AbstractIncomingMessage) -> None:
        try:
            request = json.loads(message.body)
            method, kwargs = request["method"], request["kwargs"]
            if not isinstance(method, str) or not isinstance(kwargs, dict):
                raise TypeError("method must be a string and kwargs an object")
        except (ValueError, KeyError, TypeError):
            log.error("dropping a malformed message on %s: %.200r", consumer.topic, message.body)
            await self._settle(message.reject(requeue=False))
            return
        try:
            result = await dispatch(consumer.handler, method, kwargs)
            try:
                payload = json.dumps({"result": result})
            except (TypeError, ValueError) as exc:
                raise RemoteError(type(exc).__name__, str(exc)) from exc
        except RemoteError as exc:
            if not message.reply_to:
                kind = "fanout" if consumer.fanout else "cast"
                log.exception("%s %s.%s failed", kind, consumer.topic, method)
            payload = json.dumps({"error": {"type": exc.exc_type, "message": exc.message}})
        if message.reply_to:
            await self._answer(message, message.reply_to, payload)
        await self._settle(message.ack())

    async def _answer(self, request: AbstractIncomingMessage, reply_to: str, payload: str) -> None:
        response = aio_pika.Message(
            payload.encode(), content_type=JSON, correlation_id=request.correlation_id
        )
        try:
            channel, _ = self._ready()
            # No use answering after the caller's timeout, which the request carries as its TTL
            # (aio-pika decodes it to seconds).
            ttl = request.expiration
            async with asyncio.timeout(ttl if isinstance(ttl, float) else DEFAULT_CALL_TIMEOUT):
                await self._publish(channel.default_exchange, response, reply_to)
        except (TimeoutError, BusError) as exc:
            log.warning("could not answer a call on %s: %r", request.routing_key, exc)

    @staticmethod
    async def _settle(settlement: Awaitable[None]) -> None:
        try:
            await settlement
        except _TRANSIENT:
            log.debug("the channel closed before a message was settled; the broker redelivers it")
