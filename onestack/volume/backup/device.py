"""Reaching a volume's bytes from the backup agent's host by its ``connection_info``
(what os-brick does for Cinder's backup service).

A raw file on this machine is used in place. Anything else (a qcow2 file, an NBD
export of another host) is converted to a sparse raw file in the scratch
directory: read from it, or, for a restore, written into it and converted back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from onestack.volume.drivers import qemu_img
from onestack.volume.drivers.base import VolumeDriverError


def _source(connection: dict[str, Any]) -> tuple[str, str]:
    """(qemu-img source, its format) of an export."""
    data = connection.get("data", {})
    kind = connection.get("driver_volume_type")
    if kind == "file":
        return data["path"], data.get("format", "raw")
    if kind == "nbd":
        return f"nbd://{data['host']}:{data['port']}/{data['name']}", "raw"
    raise VolumeDriverError(f"the backup agent cannot reach a {kind!r} export")


def _in_place(connection: dict[str, Any]) -> Path | None:
    data = connection.get("data", {})
    if connection.get("driver_volume_type") == "file" and data.get("format", "raw") == "raw":
        return Path(data["path"])
    return None


@contextlib.asynccontextmanager
async def readable(connection: dict[str, Any], scratch: Path) -> AsyncIterator[Path]:
    """A raw file with the volume's bytes, for the duration of the block."""
    direct = _in_place(connection)
    if direct is not None:
        yield direct
        return
    source, source_format = _source(connection)
    copy = scratch / f"read-{os.getpid()}-{id(connection)}.raw"
    try:
        await qemu_img.convert(source, source_format, copy, "raw", share="://" not in source)
        yield copy
    finally:
        copy.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def writable(connection: dict[str, Any], size: int, scratch: Path) -> AsyncIterator[Path]:
    """An all-zero raw file of ``size`` bytes to fill; it becomes the volume's data when the
    block succeeds (and only then: a failed restore leaves the volume untouched)."""
    direct = _in_place(connection)
    staging = direct.with_suffix(".restore") if direct else scratch / f"write-{id(connection)}.raw"
    try:
        with open(staging, "wb") as handle:
            handle.truncate(size)
        yield staging
        if direct is not None:
            os.replace(staging, direct)
        else:
            target, target_format = _source(connection)
            await qemu_img.convert(
                str(staging), "raw", target, target_format, existing=True, share=False
            )
    finally:
        staging.unlink(missing_ok=True)
