"""The message bus: one contract, an in-process and an AMQP (RabbitMQ) transport."""

from __future__ import annotations

from onestack.core.bus.base import Bus, BusError, BusTimeout, Consumer, RemoteError

__all__ = ["Bus", "BusError", "BusTimeout", "Consumer", "RemoteError", "make_bus"]


def make_bus(url: str) -> Bus:
    """The transport a URL names: ``memory://`` (or empty) in-process, ``amqp://…`` RabbitMQ."""
    if not url or url.startswith("memory:"):
        from onestack.core.bus.local import InProcessBus

        return InProcessBus()
    if url.startswith(("amqp://", "amqps://")):
        from onestack.core.bus.amqp import AmqpBus

        return AmqpBus(url)
    raise ValueError(f"unsupported bus URL {url!r}: use memory:// or amqp://user:pass@host/")
