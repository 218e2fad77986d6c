"""Guest disks: base images cached once per host, qcow2 overlays on them, ephemeral and swap.

A base is fetched from the image service once per host into ``_base/<image id>``
(kept as qcow2 or raw; other formats are converted to qcow2) and shared
read-only by every root disk created from it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import DriverError, ImageFetcher

GIB = 1 << 30


async def run(*args: str) -> str:
    """Run a command; its stdout, or DriverError with its stderr."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode:
        raise DriverError(f"{args[0]} {args[1]} failed: {err.decode(errors='replace')[-400:]}")
    return out.decode()


async def image_info(path: Path) -> dict[str, Any]:
    """``qemu-img info`` of a file (format, virtual-size, backing file)."""
    info: dict[str, Any] = json.loads(
        await run("qemu-img", "info", "-U", "--output=json", str(path))
    )
    return info


class BaseImages:
    """The per-host cache of image data, one fetch per image however many guests use it."""

    def __init__(self, directory: Path):
        self.dir = directory
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, image_id: str, fetch: ImageFetcher) -> tuple[Path, str]:
        """The cached base of ``image_id`` and its format, fetching it when missing."""
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        async with lock:
            path = self.dir / image_id
            if path.exists():
                return path, str((await image_info(path))["format"])
            self.dir.mkdir(parents=True, exist_ok=True)
            partial = self.dir / f"{image_id}.part"
            try:
                await fetch(image_id, partial)
                fmt = str((await image_info(partial))["format"])
                if fmt not in ("qcow2", "raw"):
                    converted = self.dir / f"{image_id}.qcow2.part"
                    await run(
                        "qemu-img",
                        "convert",
                        "-f",
                        fmt,
                        "-O",
                        "qcow2",
                        str(partial),
                        str(converted),
                    )
                    converted.replace(partial)
                    fmt = "qcow2"
                partial.replace(path)
            finally:
                partial.unlink(missing_ok=True)
            return path, fmt


async def create_overlay(base: Path, base_format: str, path: Path, size_gb: int) -> None:
    """A qcow2 root disk backed by ``base``, ``size_gb`` large (0: the image's own size)."""
    virtual = int((await image_info(base))["virtual-size"])
    size = size_gb * GIB
    if size and size < virtual:
        raise DriverError(
            f"flavor's disk ({size_gb} GiB) is smaller than the image ({virtual} bytes)"
        )
    await run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        base_format,
        "-b",
        str(base),
        str(path),
        str(max(size, virtual)),
    )


async def create_blank(path: Path, size_mb: int, swap: bool = False) -> None:
    """An empty disk (ephemeral: qcow2; swap: raw, formatted with mkswap)."""
    if swap:
        await run("qemu-img", "create", "-q", "-f", "raw", str(path), f"{size_mb}M")
        if shutil.which("mkswap"):
            await run("mkswap", "-q", str(path))
        return
    await run("qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{size_mb}M")


async def grow(path: Path, size_gb: int) -> None:
    """Grow a disk to ``size_gb`` (never shrinks)."""
    info = await image_info(path)
    if size_gb * GIB > int(info["virtual-size"]):
        await run(
            "qemu-img", "resize", "-q", "-f", str(info["format"]), str(path), str(size_gb * GIB)
        )


async def flatten(source: Path, target: Path, compress: bool = False) -> None:
    """A standalone qcow2 copy of ``source`` and its backing chain (``-U``: may be open)."""
    args = ["qemu-img", "convert", "-U", "-O", "qcow2"]
    if compress:
        args.append("-c")
    await run(*args, str(source), str(target))
