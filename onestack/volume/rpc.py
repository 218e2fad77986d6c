"""Bus topics of block storage and the client stubs that address them.

- ``volume-scheduler``: the scheduler (in each volume API process) places new
  volumes and decides extends, retypes and migrations.
- ``volume.<host@backend>``: the agent of one backend does the storage work.
- ``backup.<host>``: the backup agent of one host moves data to object storage.
- ``volume-reports``: agents report results and heartbeats to the service, which
  alone writes the database.
"""

from __future__ import annotations

from typing import Any

from onestack.core.bus.base import Bus

SCHEDULER = "volume-scheduler"
REPORTS = "volume-reports"
# Connections and data copies wait on real I/O: longer than a plain call.
EXPORT_TIMEOUT = 120.0
COPY_TIMEOUT = 3600.0


def agent_topic(host: str) -> str:
    """The topic of the agent serving ``host@backend`` (a ``#pool`` suffix is ignored)."""
    return f"volume.{host.partition('#')[0]}"


def backup_topic(host: str) -> str:
    return f"backup.{host}"


class AgentClient:
    """Calls and casts to volume agents, addressed by the volume's ``host@backend``."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def cast(self, host: str, method: str, **kwargs: Any) -> None:
        """Fire-and-forget work; the agent reports its outcome on ``volume-reports``."""
        await self.bus.cast(agent_topic(host), method, **kwargs)

    async def call(
        self, host: str, method: str, *, timeout: float = EXPORT_TIMEOUT, **kwargs: Any
    ) -> Any:
        """Work whose answer the caller needs now (connection info)."""
        return await self.bus.call(agent_topic(host), method, timeout=timeout, **kwargs)


class SchedulerClient:
    """Casts to the volume scheduler."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def cast(self, method: str, **kwargs: Any) -> None:
        await self.bus.cast(SCHEDULER, method, **kwargs)


class ReportClient:
    """How agents tell the service what happened (they never touch the database)."""

    def __init__(self, bus: Bus):
        self.bus = bus

    async def report(self, method: str, **kwargs: Any) -> None:
        await self.bus.cast(REPORTS, method, **kwargs)
