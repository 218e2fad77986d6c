"""The image service as a unit a process can host."""

from __future__ import annotations

from starlette.types import ASGIApp

from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.limits import UnifiedLimits
from onestack.image.app import build_app
from onestack.image.service import ImageService


class ImageUnit:
    """Glance v2: its service object, token validation through identity, and ASGI app."""

    name = "image"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient):
        self.limits = UnifiedLimits(client, "image")
        self.service = ImageService(settings, self.limits)
        self.bus = bus
        self.validator = RemoteTokenValidator(client)
        self.app: ASGIApp = build_app(self.service, self.validator)
        self._listeners: list[Consumer] = []

    async def start(self) -> None:
        await self.service.start()
        if self.bus is not None:
            self._listeners = [
                await self.validator.listen(self.bus),
                await self.limits.listen(self.bus),
            ]

    async def stop(self) -> None:
        for listener in self._listeners:
            await listener.stop()
        await self.service.stop()
