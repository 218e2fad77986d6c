"""The compute service as a unit a process can host.

The API process also runs the conductor and the scheduler (the ``conductor`` topic). With
the in-process bus (``onestack up``) it runs the compute agents too: N fake hosts
``host1..hostN`` with ``--fake-hosts N``, else one agent named after this machine; with
RabbitMQ they run where ``onestack agent compute`` starts them.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp

from onestack.compute.agent import ComputeAgent
from onestack.compute.app import build_app
from onestack.compute.conductor import Conductor
from onestack.compute.placement_client import PlacementClient
from onestack.compute.reclaim import reclaim_period, reclaim_soft_deleted
from onestack.compute.rpc import CONDUCTOR
from onestack.compute.service import ComputeService
from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.heartbeat import PeriodicTask

log = logging.getLogger(__name__)

CONTROL_BINARIES = ("nova-conductor", "nova-scheduler")
INTERNAL_ZONE = "internal"


def local_agents(settings: Settings) -> bool:
    """Whether this process runs the compute agents itself (always with the in-process bus)."""
    if settings.compute.local_agents is not None:
        return settings.compute.local_agents
    return not settings.bus_url or settings.bus_url.startswith("memory:")


def build_agents(settings: Settings, bus: Bus, client: ServiceClient | None) -> list[ComputeAgent]:
    """The agents of this process: ``fake_hosts`` fake ones, else one for this machine."""
    count = settings.compute.fake_hosts
    if count:
        return [
            ComputeAgent(settings, bus, host=f"host{i}", driver="fake", client=client)
            for i in range(1, count + 1)
        ]
    return [ComputeAgent(settings, bus, client=client)]


class ComputeUnit:
    """Nova v2.1: API, conductor and scheduler; the agents too when the bus is local."""

    name = "compute"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient):
        if bus is None:
            raise ValueError("the compute service needs a message bus")
        self.settings = settings
        self.bus = bus
        self.client = client
        self.service = ComputeService(settings, bus, client)
        self.placement = PlacementClient(client, settings.compute)
        self.conductor = Conductor(self.service, self.placement)
        self.validator = RemoteTokenValidator(client)
        self.app: ASGIApp = build_app(self.service, self.validator)
        self.agents: list[ComputeAgent] = []
        self._consumers: list[Consumer] = []
        self._heartbeat = PeriodicTask(
            "compute-control-heartbeat", settings.compute.report_interval, self._beat
        )
        period = reclaim_period(self.service)
        self._reclaim = (
            PeriodicTask("compute-reclaim", period, self._reclaim_once) if period else None
        )

    async def _reclaim_once(self) -> None:
        await reclaim_soft_deleted(self.service)

    async def _beat(self) -> None:
        for binary in CONTROL_BINARIES:
            await self.service.services.record(
                self.service.host, binary, topic=binary.removeprefix("nova-"), zone=INTERNAL_ZONE
            )

    async def start(self) -> None:
        await self.service.start()
        self._consumers = [
            await self.bus.consume(CONDUCTOR, self.conductor),
            await self.validator.listen(self.bus),
        ]
        await self._beat()
        self._heartbeat.start()
        if self._reclaim is not None:
            self._reclaim.start()
        if local_agents(self.settings):
            for agent in build_agents(self.settings, self.bus, self.client):
                # A host whose hypervisor cannot start must not take the cloud down with it.
                try:
                    await agent.start()
                except Exception:
                    log.exception("compute agent %s could not start", agent.host)
                    continue
                self.agents.append(agent)

    async def stop(self) -> None:
        for agent in reversed(self.agents):
            try:
                await agent.stop()
            except Exception:
                log.exception("error while stopping compute agent %s", agent.host)
        await self._heartbeat.stop()
        if self._reclaim is not None:
            await self._reclaim.stop()
        for consumer in self._consumers:
            await consumer.stop()
        await self.service.stop()
