"""The placement service as a unit a process can host."""

from __future__ import annotations

from starlette.types import ASGIApp

from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.placement.app import build_app
from onestack.placement.service import PlacementService


class PlacementUnit:
    """Placement: its service object, token validation through identity, and ASGI app."""

    name = "placement"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient):
        self.service = PlacementService(settings)
        self.bus = bus
        self.validator = RemoteTokenValidator(client)
        self.app: ASGIApp = build_app(self.service, self.validator)
        self._listener: Consumer | None = None

    async def start(self) -> None:
        await self.service.start()
        if self.bus is not None:
            self._listener = await self.validator.listen(self.bus)

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        await self.service.stop()
