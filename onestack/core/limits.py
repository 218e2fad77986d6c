"""Reading a service's unified limits from identity (``/v3/registered_limits`` and
``/v3/limits``), as oslo.limit does for OpenStack services, with a short cache."""

from __future__ import annotations

import time
from typing import Any

import httpx

from onestack.core.asgi.errors import APIError
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.identity_events import on_identity_change


class UnifiedLimits:
    """The limits identity holds for one service, per project, cached for ``ttl`` seconds."""

    def __init__(self, client: ServiceClient, service_type: str, ttl: float = 30.0):
        self.client = client
        self.service_type = service_type
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._service_id: str | None = None

    async def _get(self, path: str, key: str) -> list[dict[str, Any]]:
        try:
            response = await self.client.request("identity", "GET", path)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # Without its limits a service cannot enforce quotas: refuse rather than guess.
            raise APIError(f"Identity could not be asked for limits: {exc}", status=503) from None
        items: list[dict[str, Any]] = response.json()[key]
        return items

    async def for_project(self, project_id: str) -> dict[str, int]:
        """Resource name → limit: the project's own where set, else the registered default."""
        cached = self._cache.get(project_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if self._service_id is None:
            found = await self._get(f"/services?type={self.service_type}", "services")
            if not found:
                return {}
            self._service_id = str(found[0]["id"])
        service = self._service_id
        registered = await self._get(
            f"/registered_limits?service_id={service}", "registered_limits"
        )
        own = await self._get(f"/limits?service_id={service}&project_id={project_id}", "limits")
        limits = {r["resource_name"]: int(r["default_limit"]) for r in registered}
        limits.update({r["resource_name"]: int(r["resource_limit"]) for r in own})
        self._cache[project_id] = (time.monotonic() + self.ttl, limits)
        return limits

    def forget(self) -> None:
        """Drop cached limits (identity changed something)."""
        self._cache.clear()

    async def listen(self, bus: Bus) -> Consumer:
        """Forget cached limits whenever identity announces a change on ``bus``."""
        return await on_identity_change(bus, self.forget)
