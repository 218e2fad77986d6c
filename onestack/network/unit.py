"""The network service as a unit a process can host.

The API process also handles ``network-reports`` (the agents' state requests,
heartbeats and wiring reports). With the linuxbridge driver and the in-process
bus (``onestack up``) it runs this host's network agent too; with RabbitMQ the
agents run where ``onestack agent network`` starts them.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp

from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.network.app import build_app
from onestack.network.service import NetworkService
from onestack.network.topology import REPORTS, NetworkReports

log = logging.getLogger(__name__)


def local_agent(settings: Settings) -> bool:
    """Whether this process runs the network agent itself (by default with the local bus)."""
    if settings.network.local_agent is not None:
        return settings.network.local_agent
    return not settings.bus_url or settings.bus_url.startswith("memory:")


class NetworkUnit:
    """Neutron v2.0: its service object, token validation through identity, and ASGI app."""

    name = "network"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient):
        self.settings = settings
        self.service = NetworkService(settings, bus, client)
        self.bus = bus
        self.client = client
        self.validator = RemoteTokenValidator(client)
        self.app: ASGIApp = build_app(self.service, self.validator)
        self.agent: Any = None
        self._consumers: list[Consumer] = []

    async def start(self) -> None:
        await self.service.start()
        if self.bus is None:
            return
        self._consumers.append(await self.validator.listen(self.bus))
        if self.service.driver.name != "linuxbridge":
            return
        self._consumers.append(await self.bus.consume(REPORTS, NetworkReports(self.service)))
        if local_agent(self.settings):
            from onestack.network.agent import NetworkAgent

            agent = NetworkAgent(self.settings, self.bus, client=self.client)
            await agent.start()
            self.agent = agent

    async def stop(self) -> None:
        if self.agent is not None:
            try:
                await self.agent.stop()
            except Exception:
                log.exception("error while stopping the network agent")
        for consumer in self._consumers:
            await consumer.stop()
        await self.service.stop()
