"""Bus topics of compute and the client stubs that address them.

- ``conductor``: agents report build results, state changes, heartbeats with
  capacity and power-state syncs; the API casts builds and moves to it. The
  conductor alone writes the database (with the API).
- ``compute.<host>``: the agent of one host does the hypervisor work.
"""

from __future__ import annotations

from typing import Any

from onestack.core.bus.base import Bus

CONDUCTOR = "conductor"
# Hypervisor work (spawn, snapshot, migrations) waits on real I/O: longer than a plain call.
AGENT_CALL_TIMEOUT = 600.0


def agent_topic(host: str) -> str:
    """The topic of the compute agent of ``host``."""
    return f"compute.{host}"


class AgentClient:
    """Calls and casts to compute agents, addressed by host."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def cast(self, host: str, method: str, **kwargs: Any) -> None:
        """Fire-and-forget work; the agent reports its outcome to the conductor."""
        await self.bus.cast(agent_topic(host), method, **kwargs)

    async def call(
        self, host: str, method: str, *, timeout: float = AGENT_CALL_TIMEOUT, **kwargs: Any
    ) -> Any:
        """Work whose answer the caller needs now (console output, migration handshakes)."""
        return await self.bus.call(agent_topic(host), method, timeout=timeout, **kwargs)


class ConductorClient:
    """Casts and calls to the conductor, from the API and from agents."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def cast(self, method: str, **kwargs: Any) -> None:
        await self.bus.cast(CONDUCTOR, method, **kwargs)

    async def call(self, method: str, *, timeout: float = 60.0, **kwargs: Any) -> Any:
        return await self.bus.call(CONDUCTOR, method, timeout=timeout, **kwargs)
