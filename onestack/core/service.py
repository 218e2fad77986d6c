"""What every cloud service provides to the process that runs it."""

from __future__ import annotations

from typing import Protocol

from starlette.types import ASGIApp


class ServiceUnit(Protocol):
    """One service (identity, compute, ...) as a process hosts it: an API and its lifecycle."""

    name: str
    app: ASGIApp

    async def start(self) -> None:
        """Migrate, connect, subscribe: everything before the API may answer."""

    async def stop(self) -> None:
        """Release connections and stop background work."""
