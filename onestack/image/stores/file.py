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
# Dirty pages go to the disk as the upload proceeds (and leave the page cache), so the
# final fsync waits for the last few MiB instead of the whole image.
WRITEBACK_EVERY = 32 << 20


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
        size = flushed = 0
        try:
            async for chunk in data:
                await asyncio.to_thread(handle.write, chunk)
                size += len(chunk)
                if size - flushed >= WRITEBACK_EVERY:
                    await asyncio.to_thread(_start_writeback, handle, flushed, size - flushed)
                    flushed = size
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
        fd = await asyncio.to_thread(os.open, self._path(location), os.O_RDONLY)
        end = offset + length if length is not None else os.fstat(fd).st_size
        # The next chunk is read while the current one goes out on the socket.
        reading = asyncio.ensure_future(_pread(fd, offset, end))
        try:
            while chunk := await reading:
                offset += len(chunk)
                reading = asyncio.ensure_future(_pread(fd, offset, end))
                yield chunk
        finally:
            # A read still running in its thread must end before the descriptor closes.
            with contextlib.suppress(BaseException):
                await reading
            os.close(fd)

    async def delete(self, location: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(location).unlink)

    def local_path(self, location: str) -> Path | None:
        return self._path(location)


async def _pread(fd: int, offset: int, end: int) -> bytes:
    """Up to ``READ_CHUNK`` bytes at ``offset``, never past ``end``; empty at the end."""
    if offset >= end:
        return b""
    return await asyncio.to_thread(os.pread, fd, min(READ_CHUNK, end - offset), offset)


def _start_writeback(handle: BinaryIO, offset: int, length: int) -> None:
    """Start writing ``length`` bytes at ``offset`` to the disk and drop them from the cache
    (``POSIX_FADV_DONTNEED`` starts writeback of dirty pages; fsync still makes them durable)."""
    handle.flush()
    os.posix_fadvise(handle.fileno(), offset, length, os.POSIX_FADV_DONTNEED)


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
