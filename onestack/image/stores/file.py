"""The ``file`` store: one file per image under a directory of the data dir."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from onestack.image.stores.base import Store

READ_CHUNK = 4 << 20


class FileStore(Store):
    """Images as files, written to a temporary name, fsynced, then renamed into place."""

    name = "file"
    description = "Image files on this host's disk"

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, location: str) -> Path:
        path = (self.directory / location).resolve()
        if path.parent != self.directory.resolve():
            raise ValueError(f"location {location!r} is outside the store")
        return path

    async def add(self, image_id: str, data: AsyncIterator[bytes]) -> tuple[str, int]:
        final = self._path(image_id)
        partial = final.with_name(f".{image_id}.partial")
        handle: BinaryIO = await asyncio.to_thread(open, partial, "wb")
        size = 0
        try:
            async for chunk in data:
                await asyncio.to_thread(handle.write, chunk)
                size += len(chunk)
            await asyncio.to_thread(_flush_and_sync, handle)
            handle.close()
            await asyncio.to_thread(os.replace, partial, final)
        except BaseException:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        return image_id, size

    async def get(
        self, location: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        handle: BinaryIO = await asyncio.to_thread(open, self._path(location), "rb")
        try:
            await asyncio.to_thread(handle.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def delete(self, location: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(location).unlink)

    def local_path(self, location: str) -> Path | None:
        return self._path(location)


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
