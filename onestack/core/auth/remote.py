"""Token validation through the identity API, cached, as keystonemiddleware does."""

from __future__ import annotations

import hashlib
import time

from onestack.core.asgi.errors import Unauthorized
from onestack.core.auth.context import TokenData
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.identity_events import on_identity_change

AUTH_FAILED = "The request you have made requires authentication."


class RemoteTokenValidator:
    """Validates tokens with ``GET /v3/auth/tokens`` and caches answers for ``ttl`` seconds.

    Identity announces every change (revocations included) on the bus;
    :meth:`forget` is the handler that empties the cache then.
    """

    def __init__(self, client: ServiceClient, ttl: float = 30.0, max_entries: int = 50_000):
        self.client = client
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, TokenData]] = {}

    async def validate(self, token: str) -> TokenData:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if (
            cached is not None
            and cached[0] > now
            and cached[1].expires_at.timestamp() > time.time()
        ):
            return cached[1]
        identity = await self.client.endpoint("identity")
        response = await self.client.http.get(
            f"{identity}/auth/tokens",
            headers={"X-Auth-Token": await self.client.token(), "X-Subject-Token": token},
        )
        if response.status_code != 200:
            self._cache.pop(key, None)
            raise Unauthorized(AUTH_FAILED)
        data = TokenData.from_keystone(response.json())
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[key] = (now + self.ttl, data)
        return data

    def forget(self) -> None:
        """Drop every cached answer (identity changed something)."""
        self._cache.clear()

    async def listen(self, bus: Bus) -> Consumer:
        """Forget cached answers whenever identity announces a change on ``bus``."""
        return await on_identity_change(bus, self.forget)
