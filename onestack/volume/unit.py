"""The block storage service as a unit a process can host.

The API process also runs the scheduler (``volume-scheduler``) and the report
handler (``volume-reports``). With the in-process bus (``onestack up``) it runs
the agents too: one volume agent per configured backend and a backup agent;
with RabbitMQ they run where ``onestack agent volume|backup`` starts them.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from starlette.types import ASGIApp

from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.bus.base import Bus, Consumer
from onestack.core.bus.local import InProcessBus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.heartbeat import PeriodicTask
from onestack.volume.app import build_app
from onestack.volume.recovery import recover_interrupted
from onestack.volume.reports import VolumeReports
from onestack.volume.rpc import REPORTS, SCHEDULER
from onestack.volume.scheduler.manager import VolumeScheduler
from onestack.volume.service import VolumeService

log = logging.getLogger(__name__)

SCHEDULER_BINARY = "cinder-scheduler"


class Agent(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def local_agents(settings: Settings) -> bool:
    """Whether this process runs the agents itself (always with the in-process bus)."""
    if settings.volume.local_agents is not None:
        return settings.volume.local_agents
    return not settings.bus_url or settings.bus_url.startswith("memory:")


def build_agents(settings: Settings, bus: Bus, client: ServiceClient | None) -> list[Any]:
    """One volume agent per configured backend, and a backup agent, for this host."""
    from onestack.volume.agent import VolumeAgent
    from onestack.volume.backup.agent import BackupAgent

    agents: list[Any] = [
        VolumeAgent(settings, bus, backend, client=client) for backend in settings.volume.backends
    ]
    agents.append(BackupAgent(settings, bus, client=client))
    return agents


class VolumeUnit:
    """Cinder v3: API, scheduler and report handler; the agents too when the bus is local."""

    name = "volume"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient):
        if bus is None:
            raise ValueError("the volume service needs a message bus")
        self.settings = settings
        self.bus = bus
        self.client = client
        self.service = VolumeService(settings, bus, client)
        self.validator = RemoteTokenValidator(client)
        self.app: ASGIApp = build_app(self.service, self.validator)
        self.scheduler = VolumeScheduler(self.service)
        self.reports = VolumeReports(self.service)
        self.agents: list[Agent] = []
        self._consumers: list[Consumer] = []
        self._heartbeat = PeriodicTask(
            "volume-scheduler-heartbeat", settings.volume.report_interval, self._beat
        )

    async def _beat(self) -> None:
        await self.service.services.record(self.service.host, SCHEDULER_BINARY, topic=SCHEDULER)

    async def start(self) -> None:
        await self.service.start()
        self._consumers = [
            await self.bus.consume(SCHEDULER, self.scheduler),
            await self.bus.consume(REPORTS, self.reports),
            await self.validator.listen(self.bus),
        ]
        await self._beat()
        self._heartbeat.start()
        if local_agents(self.settings):
            for agent in build_agents(self.settings, self.bus, self.client):
                await agent.start()
                self.agents.append(agent)
            if isinstance(self.bus, InProcessBus):
                await recover_interrupted(self.service)

    async def stop(self) -> None:
        for agent in reversed(self.agents):
            try:
                await agent.stop()
            except Exception:
                log.exception("error while stopping a volume agent")
        await self._heartbeat.stop()
        for consumer in self._consumers:
            await consumer.stop()
        await self.service.stop()
