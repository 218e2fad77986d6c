"""The in-process bus of the all-in-one cloud: asyncio tasks, JSON-copied messages.

It behaves like the AMQP transport in everything a service can observe:
arguments and results go through a JSON round trip, calls and casts to a
topic nobody consumes yet wait for a consumer (calls only until their
timeout), fan-outs with no listener are dropped, and handlers run
concurrently as tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from onestack.core.bus.base import (
    DEFAULT_CALL_TIMEOUT,
    Bus,
    BusError,
    BusTimeout,
    Consumer,
    RemoteError,
)

log = logging.getLogger("onestack.bus")


def copy_json(value: Any) -> Any:
    """A JSON round trip, so sender and handler never share objects (as over AMQP)."""
    return json.loads(json.dumps(value))


async def dispatch(handler: object, method: str, kwargs: dict[str, Any]) -> Any:
    """Run ``handler.method(**kwargs)`` for either transport and return its result.

    Only public coroutine methods are reachable. Every failure is raised as
    :class:`RemoteError` (chained to the original exception): ``NoSuchMethod``
    for a method that is not dispatchable, else the exception's type name.
    """
    target = None if method.startswith("_") else getattr(handler, method, None)
    if not inspect.iscoroutinefunction(target):
        raise RemoteError("NoSuchMethod", f"{type(handler).__name__} has no method {method!r}")
    try:
        return await target(**kwargs)
    except RemoteError:
        raise  # a failed nested call keeps its original type
    except Exception as exc:
        raise RemoteError(type(exc).__name__, str(exc)) from exc


@dataclass(eq=False)
class _Envelope:
    """One message in flight; ``reply`` is set for calls."""

    topic: str
    method: str
    kwargs: dict[str, Any]
    reply: asyncio.Future[Any] | None = None


class _LocalConsumer(Consumer):
    def __init__(self, bus: InProcessBus, topic: str, handler: object, fanout: bool):
        self.bus = bus
        self.topic = topic
        self.handler = handler
        self.fanout = fanout
        self.tasks: set[asyncio.Task[None]] = set()

    def deliver(self, envelope: _Envelope) -> None:
        task = asyncio.create_task(self._run(envelope))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, envelope: _Envelope) -> None:
        reply = envelope.reply
        try:
            result = await dispatch(self.handler, envelope.method, envelope.kwargs)
            try:
                result = copy_json(result)
            except (TypeError, ValueError) as exc:
                raise RemoteError(type(exc).__name__, str(exc)) from exc
        except RemoteError as exc:
            if reply is None:
                kind = "fanout" if self.fanout else "cast"
                log.exception("%s %s.%s failed", kind, envelope.topic, envelope.method)
            elif not reply.done():
                reply.set_exception(exc)
        except asyncio.CancelledError:
            if reply is not None and not reply.done():
                reply.set_exception(BusError("the bus stopped before the call was answered"))
            raise
        else:
            if reply is not None and not reply.done():
                reply.set_result(result)

    async def stop(self) -> None:
        """Unsubscribe, then wait for the handlers already running."""
        self.bus._unsubscribe(self)
        # A handler may stop its own consumer; it must not wait for itself.
        running = self.tasks - {asyncio.current_task()}
        if running:
            await asyncio.gather(*running, return_exceptions=True)


class InProcessBus(Bus):
    """Topics within one process; usable between :meth:`start` and :meth:`stop`.

    Calls and casts go to one consumer of the topic, in turn when there are
    several; ones sent before any consumer exists are queued for the first.
    """

    def __init__(self) -> None:
        self._started = False
        self._workers: dict[str, list[_LocalConsumer]] = defaultdict(list)
        self._listeners: dict[str, list[_LocalConsumer]] = defaultdict(list)
        self._pending: dict[str, deque[_Envelope]] = defaultdict(deque)
        self._turn: dict[str, int] = defaultdict(int)

    async def start(self) -> None:
        """Accept messages; there is nothing to connect."""
        self._started = True

    async def stop(self) -> None:
        """Unsubscribe everyone and cancel the handlers still running.

        Waiting callers fail with :class:`BusError`; queued casts are dropped.
        """
        self._started = False
        groups = [*self._workers.values(), *self._listeners.values()]
        consumers = [consumer for group in groups for consumer in group]
        self._workers.clear()
        self._listeners.clear()
        tasks = [task for consumer in consumers for task in consumer.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for envelope in (e for queue in self._pending.values() for e in queue):
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(BusError("the bus stopped before the call was sent"))
        self._pending.clear()

    def _require_started(self) -> None:
        if not self._started:
            raise BusError("the in-process bus is not started")

    def _unsubscribe(self, consumer: _LocalConsumer) -> None:
        group = (self._listeners if consumer.fanout else self._workers).get(consumer.topic, [])
        with contextlib.suppress(ValueError):
            group.remove(consumer)

    def _send(self, envelope: _Envelope) -> None:
        workers = self._workers.get(envelope.topic)
        if not workers:
            self._pending[envelope.topic].append(envelope)
            return
        turn = self._turn[envelope.topic] % len(workers)
        self._turn[envelope.topic] = turn + 1
        workers[turn].deliver(envelope)

    async def call(
        self, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        """Invoke ``method`` on one consumer of ``topic`` and return its result."""
        self._require_started()
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        envelope = _Envelope(topic, method, copy_json(kwargs), reply)
        self._send(envelope)
        try:
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            # Like an expired AMQP message: nobody runs a call its caller gave up on.
            queued = self._pending.get(topic)
            if queued is not None and envelope in queued:
                queued.remove(envelope)
            raise BusTimeout(f"no reply from {topic}.{method} within {timeout}s") from None

    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        """Deliver ``method`` to one consumer of ``topic``, now or when one subscribes."""
        self._require_started()
        self._send(_Envelope(topic, method, copy_json(kwargs)))

    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        """Deliver ``method`` to every current fan-out listener of ``topic``."""
        self._require_started()
        for listener in list(self._listeners.get(topic, [])):
            listener.deliver(_Envelope(topic, method, copy_json(kwargs)))

    async def consume(self, topic: str, handler: object, *, fanout: bool = False) -> Consumer:
        """Dispatch ``topic`` to ``handler``; a first worker receives what was queued."""
        self._require_started()
        consumer = _LocalConsumer(self, topic, handler, fanout)
        if fanout:
            self._listeners[topic].append(consumer)
            return consumer
        self._workers[topic].append(consumer)
        queued = self._pending.pop(topic, deque())
        while queued:
            self._send(queued.popleft())
        return consumer
