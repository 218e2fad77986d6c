"""``qemu-img`` as the file driver uses it: create, convert, resize, inspect disk files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from onestack.volume.drivers.base import VolumeDriverError

# qemu-img's names for the disk formats Glance knows.
QEMU_FORMATS = {
    "raw": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vdi": "vdi",
    "vhd": "vpc",
    "vhdx": "vhdx",
    "iso": "raw",
}


def qemu_format(disk_format: str) -> str:
    """qemu-img's name for a Glance disk format; VolumeDriverError for one it cannot write."""
    try:
        return QEMU_FORMATS[disk_format]
    except KeyError:
        raise VolumeDriverError(f"disk format {disk_format!r} is not supported") from None


async def run(*args: str) -> str:
    """Run ``qemu-img`` with ``args``; its stdout, or VolumeDriverError with its stderr."""
    try:
        process = await asyncio.create_subprocess_exec(
            "qemu-img",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise VolumeDriverError("qemu-img is not installed (Debian: qemu-utils)") from None
    out, err = await process.communicate()
    if process.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise VolumeDriverError(f"qemu-img {args[0]} failed: {message[-1] if message else '?'}")
    return out.decode()


async def info(path: Path | str, *, image_format: str | None = None) -> dict[str, Any]:
    """``qemu-img info`` as JSON (shared lock: works on attached volumes)."""
    args = ["info", "-U", "--output=json"]
    if image_format:
        args += ["-f", image_format]
    data: dict[str, Any] = json.loads(await run(*args, str(path)))
    return data


async def create(path: Path, image_format: str, size_bytes: int) -> None:
    """A new empty (sparse) disk file."""
    await run("create", "-q", "-f", image_format, str(path), str(size_bytes))


async def convert(
    source: str,
    source_format: str,
    dest: Path | str,
    dest_format: str,
    *,
    existing: bool = False,
    share: bool = True,
) -> None:
    """Copy a disk between files/URLs and formats; zeros are skipped, so the result is sparse.

    ``share`` reads a file that a running guest holds open (a crash-consistent copy);
    ``existing`` writes into an existing target instead of creating it.
    """
    args = ["convert", "-q", "-f", source_format, "-O", dest_format]
    if share:
        args.append("-U")
    if existing:
        args.append("-n")
    if dest_format == "qcow2" and not existing:
        args += ["-o", "preallocation=off"]
    await run(*args, source, str(dest))


async def resize(path: Path, image_format: str, size_bytes: int) -> None:
    """Grow a disk file to ``size_bytes``."""
    await run("resize", "-q", "-f", image_format, str(path), str(size_bytes))


async def virtual_size(path: Path | str, image_format: str | None = None) -> int:
    """The size the guest sees, in bytes."""
    return int((await info(path, image_format=image_format))["virtual-size"])
