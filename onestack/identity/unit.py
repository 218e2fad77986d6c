"""The identity service as a unit a process can host."""

from __future__ import annotations

from starlette.types import ASGIApp

from onestack.core.bus.base import Bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.identity.app import build_app
from onestack.identity.service import IdentityService


class IdentityUnit:
    """Keystone v3: its service object and ASGI app."""

    name = "identity"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient | None = None):
        self.service = IdentityService(settings, bus)
        self.app: ASGIApp = build_app(self.service)

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()
