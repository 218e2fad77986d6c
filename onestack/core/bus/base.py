"""The message bus contract shared by the in-process and AMQP transports.

Services talk to their agents over topics (``conductor``, ``scheduler``,
``compute.<host>``, ``identity.events`` ...). Three verbs:

- ``call``: request/response to one consumer of a topic; raises
  :class:`BusTimeout` when no answer arrives in time and re-raises a
  handler's failure as :class:`RemoteError`.
- ``cast``: fire-and-forget to one consumer of a topic (work-queue semantics:
  with several consumers on a topic each message goes to one of them).
- ``fanout``: fire-and-forget to every consumer subscribed with
  ``fanout=True`` on that topic.

Messages are JSON: method name plus keyword arguments. A handler object
exposes its methods as ``async def method(self, **kwargs)``; names starting
with ``_`` are never dispatched.

Arguments and results must be JSON-serialisable and arrive as copies (tuples
become lists, dict keys strings); ``topic``, ``method`` and ``timeout`` cannot
be argument names, the verbs take them. Handlers run concurrently. Over AMQP
delivery is at least once: a handler cut short by a disconnect is cancelled
and its message delivered again.
"""

from __future__ import annotations

import abc
from typing import Any

DEFAULT_CALL_TIMEOUT = 60.0


class BusError(Exception):
    """Base class for bus failures."""


class BusTimeout(BusError):
    """No reply to a call arrived within its timeout."""


class RemoteError(BusError):
    """The remote handler raised; carries its exception type name and message."""

    def __init__(self, exc_type: str, message: str):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


class Consumer(abc.ABC):
    """A running subscription; ``stop`` unsubscribes it."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop consuming; messages in flight finish first."""


class Bus(abc.ABC):
    """A transport for RPC calls, casts and fan-out by topic."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (AMQP) or prepare (in-process); idempotent."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop all consumers and disconnect.

        Handlers still running are cancelled; calls still waiting for a reply
        fail with :class:`BusError`.
        """

    @abc.abstractmethod
    async def call(
        self, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        """Invoke ``method`` on one consumer of ``topic`` and return its result."""

    @abc.abstractmethod
    async def cast(self, topic: str, method: str, **kwargs: Any) -> None:
        """Deliver ``method`` to one consumer of ``topic`` without waiting."""

    @abc.abstractmethod
    async def fanout(self, topic: str, method: str, **kwargs: Any) -> None:
        """Deliver ``method`` to every fan-out consumer of ``topic``."""

    @abc.abstractmethod
    async def consume(self, topic: str, handler: object, *, fanout: bool = False) -> Consumer:
        """Dispatch messages on ``topic`` to the public async methods of ``handler``."""
