"""Identity announces every write on a fan-out topic; caches elsewhere listen to drop stale data."""

from __future__ import annotations

from collections.abc import Callable

from onestack.core.bus.base import Bus, Consumer

IDENTITY_EVENTS = "identity.events"


class _OnChange:
    def __init__(self, callback: Callable[[], None]):
        self._callback = callback

    async def changed(self) -> None:
        """Identity wrote something (a revocation, a role, a limit)."""
        self._callback()


async def on_identity_change(bus: Bus, callback: Callable[[], None]) -> Consumer:
    """Call ``callback`` whenever identity announces a change on ``bus``."""
    return await bus.consume(IDENTITY_EVENTS, _OnChange(callback), fanout=True)
