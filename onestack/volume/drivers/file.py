"""The ``file`` driver: each volume a sparse raw or qcow2 file in the backend's directory.

Thin by construction: files are created sparse and every copy goes through
``qemu-img convert``, which skips zeros. Snapshots are such sparse copies
rather than backing chains: a chained snapshot could not be removed while its
volume is attached to a running guest (the guest holds the top of the chain),
and copies keep every snapshot independent of the volume's later life.

Every change that replaces data (clone, revert, image copy, migration) writes a
temporary file next to the target and renames it into place only once it is
complete, so a failure leaves the original volume untouched.

Exports: a compute host on this machine gets ``driver_volume_type: file`` (the
path); any other host gets ``nbd`` from a ``qemu-storage-daemon`` export.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from onestack.core.config import VolumeBackendSettings
from onestack.volume.drivers import qemu_img
from onestack.volume.drivers.base import (
    GIB,
    Capabilities,
    SnapshotRef,
    VolumeDriver,
    VolumeDriverError,
    VolumeRef,
)
from onestack.volume.drivers.nbd_export import NbdExporter

FORMATS = ("raw", "qcow2")


class FileDriver(VolumeDriver):
    """Volumes as files under ``directory``; see the module docstring."""

    name = "file"
    storage_protocol = "file"

    def __init__(
        self,
        backend: VolumeBackendSettings,
        directory: Path,
        *,
        host: str | None = None,
        export_address: str = "127.0.0.1",
    ):
        self.backend = backend
        self.directory = directory
        self.volume_format = backend.volume_format
        # The machine this agent runs on: compute hosts with this name attach by path.
        self.host = host or socket.gethostname()
        self.exporter = NbdExporter(directory, export_address)

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    # Paths -------------------------------------------------------------------------

    def _find(self, prefix: str, ident: str) -> tuple[Path, str] | None:
        for image_format in FORMATS:
            path = self.directory / f"{prefix}-{ident}.{image_format}"
            if path.exists():
                return path, image_format
        return None

    def _volume(self, volume: VolumeRef) -> tuple[Path, str]:
        found = self._find("volume", volume.id)
        if found is None:
            raise VolumeDriverError(f"the data of volume {volume.id} is missing on this backend")
        return found

    def _snapshot(self, snapshot: SnapshotRef) -> tuple[Path, str]:
        found = self._find("snapshot", snapshot.id)
        if found is None:
            raise VolumeDriverError(f"the data of snapshot {snapshot.id} is missing")
        return found

    def _new(self, prefix: str, ident: str, image_format: str | None = None) -> Path:
        return self.directory / f"{prefix}-{ident}.{image_format or self.volume_format}"

    async def local_path(self, volume: VolumeRef) -> tuple[Path, str]:
        return self._volume(volume)

    # Capacity ----------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        usage = await asyncio.to_thread(shutil.disk_usage, self.directory)
        total = self.backend.total_capacity_gb or usage.total / GIB
        used_here = await asyncio.to_thread(self._allocated_bytes)
        free = min(usage.free / GIB, max(total - used_here / GIB, 0.0))
        return Capabilities(
            volume_backend_name=self.backend.name,
            total_capacity_gb=round(total, 2),
            free_capacity_gb=round(free, 2),
            max_over_subscription_ratio=self.backend.max_over_subscription_ratio,
            reserved_percentage=self.backend.reserved_percentage,
            storage_protocol=self.storage_protocol,
            online_extend_support=self.volume_format == "raw",
            extra={"volume_format": self.volume_format, **self.backend.capabilities},
        )

    def _allocated_bytes(self) -> int:
        total = 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith(FORMATS):
                total += entry.stat().st_blocks * 512
        return total

    # Volumes -----------------------------------------------------------------------

    async def _place(self, tmp: Path, final: Path) -> None:
        await asyncio.to_thread(os.replace, tmp, final)

    async def _create_empty(self, target: Path, size_gib: int) -> None:
        if self.volume_format == "raw":
            with open(target, "wb") as handle:
                handle.truncate(size_gib * GIB)
        else:
            await qemu_img.create(target, self.volume_format, size_gib * GIB)

    async def create_volume(self, volume: VolumeRef) -> str | None:
        final = self._new("volume", volume.id)
        tmp = final.with_suffix(".tmp")
        try:
            await self._create_empty(tmp, volume.size)
            await self._place(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return str(final)

    async def rename_volume(self, volume: VolumeRef, new_id: str) -> str | None:
        path, image_format = self._volume(volume)
        final = self._new("volume", new_id, image_format)
        # A rename keeps the inode: a guest that opened the file keeps writing to it.
        path.rename(final)
        return str(final)

    async def _copy_into_new(
        self, volume: VolumeRef, source: str, source_format: str, *, share: bool = True
    ) -> str:
        """A new volume file holding ``source``'s data, grown to the volume's size."""
        final = self._new("volume", volume.id)
        tmp = final.with_suffix(".tmp")
        try:
            await qemu_img.convert(source, source_format, tmp, self.volume_format, share=share)
            await self._grow(tmp, self.volume_format, volume.size)
            await self._place(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return str(final)

    async def _grow(self, path: Path, image_format: str, size_gib: int) -> None:
        current = await qemu_img.virtual_size(path, image_format)
        if current > size_gib * GIB:
            raise VolumeDriverError(
                f"the data is {current} bytes, more than the volume's {size_gib} GiB"
            )
        if current < size_gib * GIB:
            await qemu_img.resize(path, image_format, size_gib * GIB)

    async def create_volume_from_snapshot(
        self, volume: VolumeRef, snapshot: SnapshotRef
    ) -> str | None:
        path, image_format = self._snapshot(snapshot)
        return await self._copy_into_new(volume, str(path), image_format)

    async def create_cloned_volume(self, volume: VolumeRef, source: VolumeRef) -> str | None:
        path, image_format = self._volume(source)
        return await self._copy_into_new(volume, str(path), image_format)

    async def delete_volume(self, volume: VolumeRef) -> None:
        await self.exporter.stop_all(volume.id)
        found = self._find("volume", volume.id)
        if found is not None:
            found[0].unlink(missing_ok=True)

    async def extend_volume(self, volume: VolumeRef, new_size: int) -> None:
        path, image_format = self._volume(volume)
        current = await qemu_img.virtual_size(path, image_format)
        if new_size * GIB < current:
            raise VolumeDriverError("a volume cannot shrink")
        if image_format == "raw":
            # Growing a sparse file allocates nothing and cannot lose data; an attached
            # guest sees the new size once its hypervisor is told (compute's block_resize).
            await asyncio.to_thread(os.truncate, path, new_size * GIB)
        else:
            await qemu_img.resize(path, image_format, new_size * GIB)

    # Snapshots ---------------------------------------------------------------------

    async def create_snapshot(self, snapshot: SnapshotRef, volume: VolumeRef) -> str | None:
        path, image_format = self._volume(volume)
        final = self._new("snapshot", snapshot.id, image_format)
        tmp = final.with_suffix(".tmp")
        try:
            await qemu_img.convert(str(path), image_format, tmp, image_format)
            await self._place(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return str(final)

    async def delete_snapshot(self, snapshot: SnapshotRef, volume: VolumeRef) -> None:
        found = self._find("snapshot", snapshot.id)
        if found is not None:
            found[0].unlink(missing_ok=True)

    async def revert_to_snapshot(self, volume: VolumeRef, snapshot: SnapshotRef) -> None:
        snapshot_path, snapshot_format = self._snapshot(snapshot)
        path, image_format = self._volume(volume)
        tmp = path.with_suffix(".tmp")
        try:
            await qemu_img.convert(str(snapshot_path), snapshot_format, tmp, image_format)
            await self._grow(tmp, image_format, volume.size)
            await self._place(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # Exports -----------------------------------------------------------------------

    def _is_local(self, connector: dict[str, Any]) -> bool:
        return connector.get("host") == self.host and not connector.get("force_nbd")

    async def initialize_connection(
        self, volume: VolumeRef, connector: dict[str, Any]
    ) -> dict[str, Any]:
        path, image_format = self._volume(volume)
        readonly = volume.admin_metadata.get("readonly") == "True"
        common = {
            "volume_id": volume.id,
            "access_mode": "ro" if readonly else "rw",
            "multiattach": volume.multiattach,
            "qos_specs": volume.qos_specs or None,
            "discard": True,
        }
        if self._is_local(connector):
            return {
                "driver_volume_type": "file",
                "data": {**common, "path": str(path), "format": image_format},
            }
        target = await self.exporter.export(
            volume.id, path, image_format, str(connector.get("host")), writable=not readonly
        )
        return {"driver_volume_type": "nbd", "data": {**common, **target}}

    async def terminate_connection(self, volume: VolumeRef, connector: dict[str, Any]) -> None:
        if not self._is_local(connector):
            await self.exporter.release(volume.id, str(connector.get("host")))

    async def initialize_snapshot_connection(
        self, snapshot: SnapshotRef, connector: dict[str, Any]
    ) -> dict[str, Any]:
        path, image_format = self._snapshot(snapshot)
        common = {"snapshot_id": snapshot.id, "access_mode": "ro"}
        if self._is_local(connector):
            return {
                "driver_volume_type": "file",
                "data": {**common, "path": str(path), "format": image_format},
            }
        target = await self.exporter.export(
            snapshot.id, path, image_format, str(connector.get("host")), writable=False
        )
        return {"driver_volume_type": "nbd", "data": {**common, **target}}

    async def terminate_snapshot_connection(
        self, snapshot: SnapshotRef, connector: dict[str, Any]
    ) -> None:
        if not self._is_local(connector):
            await self.exporter.release(snapshot.id, str(connector.get("host")))

    # Data copies -------------------------------------------------------------------

    async def copy_image_to_volume(self, volume: VolumeRef, image: Path, image_format: str) -> None:
        await self._copy_into_new(volume, str(image), qemu_img.qemu_format(image_format))

    async def copy_volume_to_image(self, volume: VolumeRef, dest: Path, disk_format: str) -> None:
        path, image_format = self._volume(volume)
        await qemu_img.convert(str(path), image_format, dest, qemu_img.qemu_format(disk_format))

    async def copy_volume_from(self, volume: VolumeRef, source: dict[str, Any]) -> None:
        data = source.get("data", {})
        kind = source.get("driver_volume_type")
        if kind == "file":
            await self._copy_into_new(volume, data["path"], data["format"])
        elif kind == "nbd":
            url = f"nbd://{data['host']}:{data['port']}/{data['name']}"
            await self._copy_into_new(volume, url, "raw", share=False)
        else:
            raise VolumeDriverError(f"cannot copy from a {kind!r} export")

    async def stop(self) -> None:
        with contextlib.suppress(OSError):
            for leftover in self.directory.glob("*.tmp"):
                leftover.unlink(missing_ok=True)
