"""What uploaded bytes really are: hashes, format detection and safety checks, as they stream.

Format detection and the safety checks (a qcow2 whose backing file or
external data file points anywhere, a VMDK with extents elsewhere, content
that is not what ``disk_format`` declares) come from oslo.utils'
``format_inspector``, the inspector Glance and Nova use for this since the
qcow2 backing-file advisories. ``virtual_size`` is read with ``qemu-img info``
pinned to the verified format, once the checks have passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from oslo_utils.imageutils import format_inspector

# Glance disk_format → the inspector formats that may legitimately carry it.
ACCEPTED = {
    "raw": {"raw", "gpt", "iso"},
    "qcow2": {"qcow2"},
    "vmdk": {"vmdk"},
    "vhd": {"vhd"},
    "vhdx": {"vhdx"},
    "vdi": {"vdi"},
    "iso": {"iso"},
    "ploop": {"raw"},
    "aki": {"raw"},
    "ari": {"raw"},
    "ami": {"raw", "gpt"},
}
QEMU_FORMAT = {"vhd": "vpc", "iso": "raw", "gpt": "raw"}


_HASHING = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="digest")


class InspectionError(Exception):
    """The data is not a safe image of the declared format."""


@dataclass(frozen=True)
class Inspected:
    """The facts an upload established."""

    size: int
    checksum: str
    os_hash_value: str
    detected_format: str
    virtual_size: int | None


class _Relay:
    """An iterator that hands the inspector the chunk that just arrived."""

    def __init__(self) -> None:
        self.chunk = b""

    def __iter__(self) -> _Relay:
        return self

    def __next__(self) -> bytes:
        return self.chunk


class UploadInspector:
    """Fed every chunk of an upload (from a worker thread); judges the whole at the end."""

    def __init__(self, disk_format: str | None, max_size: int):
        self.disk_format = disk_format
        self.max_size = max_size
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha512 = hashlib.sha512()
        self._relay = _Relay()
        self._wrapper = format_inspector.InspectWrapper(cast(IO[bytes], self._relay))

    def feed(self, chunk: bytes) -> None:
        """Account for one chunk; raises :class:`SizeExceeded` past ``max_size``."""
        self.size += len(chunk)
        if self.size > self.max_size:
            raise SizeExceeded(self.max_size)
        # hashlib releases the GIL on big buffers: both digests run at once on two cores.
        md5_done = _HASHING.submit(self._md5.update, chunk)
        self._sha512.update(chunk)
        md5_done.result()
        self._relay.chunk = chunk
        # A broken header is judged in finish() as a mismatch, not a crash here.
        with contextlib.suppress(format_inspector.ImageFormatError):
            next(self._wrapper)

    def finish(self) -> tuple[str, str, format_inspector.FileInspector]:
        """Hashes and the verified inspector; :class:`InspectionError` if unsafe or mismatched."""
        self._wrapper.close()
        try:
            inspector = self._wrapper.format
        except format_inspector.ImageFormatError as exc:
            raise InspectionError(f"The image data is ambiguous or malformed: {exc}") from None
        if inspector is None:
            raise InspectionError("The image data could not be identified.")
        detected = str(inspector)
        if self.disk_format and detected not in ACCEPTED.get(self.disk_format, {self.disk_format}):
            raise InspectionError(
                f"Image content is {detected} but disk_format is {self.disk_format}."
            )
        try:
            inspector.safety_check()
        except (format_inspector.SafetyCheckFailed, format_inspector.ImageFormatError) as exc:
            raise InspectionError(f"Image failed the safety checks: {exc}") from None
        return self._md5.hexdigest(), self._sha512.hexdigest(), inspector


class SizeExceeded(Exception):
    """The upload is larger than allowed."""

    def __init__(self, limit: int):
        super().__init__(f"Image data exceeds the limit of {limit} bytes.")
        self.limit = limit


async def virtual_size(path: Path | None, detected_format: str, fallback: int | None) -> int | None:
    """``qemu-img info`` of the stored file, pinned to its verified format."""
    qemu_img = shutil.which("qemu-img")
    if path is None or qemu_img is None:
        return fallback
    process = await asyncio.create_subprocess_exec(
        qemu_img,
        "info",
        "--output",
        "json",
        "--force-share",
        "-f",
        QEMU_FORMAT.get(detected_format, detected_format),
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    except TimeoutError:
        process.kill()
        return fallback
    if process.returncode != 0:
        return fallback
    value = json.loads(out).get("virtual-size")
    return int(value) if value is not None else fallback
