"""The ``fake`` driver: sizes in memory, no data. For scale tests and simulations only.

It follows the contract of :class:`VolumeDriver` exactly (errors for missing
volumes, no shrinking, capacity accounting) so that the agent, scheduler and API
behave as with a real backend; it just stores nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onestack.core.config import VolumeBackendSettings
from onestack.volume.drivers.base import (
    Capabilities,
    SnapshotRef,
    VolumeDriver,
    VolumeDriverError,
    VolumeRef,
)

FAKE_CAPACITY_GB = 100_000.0


class FakeDriver(VolumeDriver):
    """Volumes that exist only as sizes in this process."""

    name = "fake"
    storage_protocol = "fake"

    def __init__(self, backend: VolumeBackendSettings):
        self.backend = backend
        self.volumes: dict[str, int] = {}
        self.snapshots: dict[str, int] = {}

    async def start(self) -> None:
        return None

    async def capabilities(self) -> Capabilities:
        total = self.backend.total_capacity_gb or FAKE_CAPACITY_GB
        used = sum(self.volumes.values()) + sum(self.snapshots.values())
        return Capabilities(
            volume_backend_name=self.backend.name,
            total_capacity_gb=total,
            free_capacity_gb=max(total - used, 0),
            max_over_subscription_ratio=self.backend.max_over_subscription_ratio,
            reserved_percentage=self.backend.reserved_percentage,
            storage_protocol=self.storage_protocol,
            extra=dict(self.backend.capabilities),
        )

    def _need(self, volume_id: str) -> int:
        if volume_id not in self.volumes:
            raise VolumeDriverError(f"volume {volume_id} does not exist on this fake backend")
        return self.volumes[volume_id]

    async def create_volume(self, volume: VolumeRef) -> str | None:
        self.volumes[volume.id] = volume.size
        return f"fake://{volume.id}"

    async def create_volume_from_snapshot(
        self, volume: VolumeRef, snapshot: SnapshotRef
    ) -> str | None:
        if snapshot.id not in self.snapshots:
            raise VolumeDriverError(f"snapshot {snapshot.id} does not exist")
        return await self.create_volume(volume)

    async def create_cloned_volume(self, volume: VolumeRef, source: VolumeRef) -> str | None:
        self._need(source.id)
        return await self.create_volume(volume)

    async def rename_volume(self, volume: VolumeRef, new_id: str) -> str | None:
        self.volumes[new_id] = self.volumes.pop(volume.id, volume.size)
        return f"fake://{new_id}"

    async def delete_volume(self, volume: VolumeRef) -> None:
        self.volumes.pop(volume.id, None)

    async def extend_volume(self, volume: VolumeRef, new_size: int) -> None:
        if new_size < self._need(volume.id):
            raise VolumeDriverError("a volume cannot shrink")
        self.volumes[volume.id] = new_size

    async def create_snapshot(self, snapshot: SnapshotRef, volume: VolumeRef) -> str | None:
        self.snapshots[snapshot.id] = self._need(volume.id)
        return f"fake://{snapshot.id}"

    async def delete_snapshot(self, snapshot: SnapshotRef, volume: VolumeRef) -> None:
        self.snapshots.pop(snapshot.id, None)

    async def revert_to_snapshot(self, volume: VolumeRef, snapshot: SnapshotRef) -> None:
        self._need(volume.id)
        if snapshot.id not in self.snapshots:
            raise VolumeDriverError(f"snapshot {snapshot.id} does not exist")

    async def initialize_connection(
        self, volume: VolumeRef, connector: dict[str, Any]
    ) -> dict[str, Any]:
        self._need(volume.id)
        return {"driver_volume_type": "fake", "data": {"volume_id": volume.id}}

    async def terminate_connection(self, volume: VolumeRef, connector: dict[str, Any]) -> None:
        return None

    async def copy_image_to_volume(self, volume: VolumeRef, image: Path, image_format: str) -> None:
        self._need(volume.id)

    async def copy_volume_to_image(self, volume: VolumeRef, dest: Path, disk_format: str) -> None:
        self._need(volume.id)
        dest.write_bytes(b"")

    async def copy_volume_from(self, volume: VolumeRef, source: dict[str, Any]) -> None:
        self.volumes[volume.id] = volume.size

    async def local_path(self, volume: VolumeRef) -> tuple[Path, str]:
        raise VolumeDriverError("the fake driver stores no data")
