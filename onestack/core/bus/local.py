"""The in-process bus of the all-in-one cloud: asyncio queues, JSON-copied messages."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from onestack.core.bus.base import DEFAULT_CALL_TIMEOUT, Bus, BusTimeout, Consumer, RemoteError

log = logging.getLogger("onestack.bus")

Message = dict[str, Any]


def copy_json(value: Any) -> Any:
    """A JSON round trip, so sender and handler never share objects (as over AMQP)."""
    return json.loads(json.dumps(value))


async def dispatch(handler: object, method: str, kwargs: dict[str, Any]) -> Any:
    """Invoke ``handler.method(**kwargs)``; only public coroutine methods are reachable."""
    target = None if method.startswith("_") else getattr(handler, method, None)
    if target is None or not callable(target):
        raise RemoteError("NoSuchMethod", f"{type(handler).__name__} has no method {method!r}")
    result: Awaitable[Any] = target(**kwargs)
    return await result


class _LocalConsumer(Consumer):
    def __init__(self, bus: InProcessBus, topic: str, handler: object, fanout: bool):
        self.bus = bus
        self.topic = topic
        self.handler = handler
        self.fanout = fanout
        self.tasks: set[asyncio.Task[None]] = set()

    def deliver(self, message: Message, reply: Callable[[Any, BaseException | None], None]) -> None:
        task = asyncio.create_task(self._run(message, reply))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self, message: Message, reply: Callable[[Any, BaseException | None], None]
    ) -> None:
        try:
            result = await dispatch(self.handler, message["method"], message["kwargs"])
            reply(copy_json(result), None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reply(None, exc)

    async def stop(self) -> None:
        self.bus._unsubscribe(self)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class InProcessBus(Bus):
    """Topics within one process. Casts to a topic nobody consumes yet wait for a consumer."""

    def __init__(self) -> None:
        self._workers: dict[str, list[_LocalConsumer]] = defaultdict(list)
        self._listeners: dict[str, list[_LocalConsumer]] = defaultdict(list)
        self._pending: dict[str, deque[tuple[Message, Callable[..., None]]]] = defaultdict(deque)
        self._next: dict[str, itertools.count[int]] = defaultdict(itertools.count)

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        for consumer in [c for group in self._workers.values() for c in group] + [
            c for group in self._listeners.values() for c in group
        ]:
            await consumer.stop()

    def _unsubscribe(self, consumer: _LocalConsumer) -> None:
        group = (self._listeners if consumer.fanout else self._workers)[consumer.topic]
        with contextlib.suppress(ValueError):
            group.remove(consumer)

    def _send(self, topic: str, message: Message, reply: Callable[..., None]) -> None:
        workers = self._workers.get(topic)
        if not workers:
            self._pending[topic].append((message, reply))
            return
        worker = workers[next(self._next[topic]) % len(workers)]
        worker.deliver(message, reply)

    @staticmethod
    def _message(method: str, kwargs: dict[str, Any]) -> Message:
        return {"method": method, "kwargs": copy_json(kwargs)}

    async def call(
        self, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def reply(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(result)
            elif isinstance(error, RemoteError):
                future.set_exception(error)
            else:
                future.set_exception(RemoteError(type(error).__name__, str(error)))

        message = self._message(method, kwargs)
        self._send(topic, message, reply)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._forget(topic, message)
            raise BusTimeout(f"no reply from {topic}.{method} within {timeout}s") from None

    def _forget(self, topic: str, message: Message) -> None:
        pending = self._pending.get(topic)
        if pending:
            self._pending[topic] = deque(item for item in pending if item[0] is not message)

    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        def reply(_result: Any, error: BaseException | None) -> None:
            if error is not None:
                log.error("cast %s.%s failed: %s: %s", topic, method, type(error).__name__, error)

        self._send(topic, self._message(method, kwargs), reply)

    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        for listener in list(self._listeners.get(topic, [])):

            def reply(_result: Any, error: BaseException | None) -> None:
                if error is not None:
                    log.error("fanout %s.%s failed: %s", topic, method, error)

            listener.deliver(self._message(method, kwargs), reply)

    async def consume(self, topic: str, handler: object, *, fanout: bool = False) -> Consumer:
        consumer = _LocalConsumer(self, topic, handler, fanout)
        if fanout:
            self._listeners[topic].append(consumer)
            return consumer
        self._workers[topic].append(consumer)
        pending = self._pending.pop(topic, deque())
        while pending:
            message, reply = pending.popleft()
            self._send(topic, message, reply)
        return consumer
