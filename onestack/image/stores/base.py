"""The image store contract: where image bytes live.

A store keeps one blob per image and streams it both ways; it never holds a
whole image in memory. ``add`` must leave nothing behind when the stream
fails, and a blob becomes visible only once completely written.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from pathlib import Path


class StoreError(Exception):
    """The store could not complete an operation."""


class Store(abc.ABC):
    """One place image data can be kept."""

    name: str
    description: str

    @abc.abstractmethod
    async def add(self, image_id: str, data: AsyncIterator[bytes]) -> tuple[str, int]:
        """Write ``data`` for ``image_id``; returns (location, size). Atomic."""

    @abc.abstractmethod
    def get(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (all, if None) of the blob from ``offset``."""

    @abc.abstractmethod
    async def delete(self, location: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    def local_path(self, location: str) -> Path | None:
        """A filesystem path of the blob, for tools like qemu-img; None if it has none."""
        return None
