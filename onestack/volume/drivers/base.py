"""The volume driver contract: what a storage backend must do for the volume agent.

One agent serves one backend (``host@backend``) through one driver. The agent
calls these coroutines with plain data (:class:`VolumeRef`, :class:`SnapshotRef`,
dicts), never database rows; drivers never touch the database. An LVM, Ceph RBD
or vendor driver implements the same class. ``file`` (``drivers/file.py``) is the
real driver of this build; ``fake`` (``drivers/fake.py``) keeps only sizes in
memory and exists for scale tests.

Rules every driver follows:

- A call either completes or raises :class:`VolumeDriverError` leaving the
  volume as it was: a failed extend, clone, retype or migration never damages
  the source data (work on a temporary, then swap it in).
- Calls are idempotent where the agent may repeat them after a restart
  (``delete_*`` of something already gone succeeds).
- ``initialize_connection`` returns Cinder's ``connection_info``:
  ``{"driver_volume_type": ..., "data": {...}}``; the compute host's
  connector attaches by it. Exports must survive an agent restart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIB = 1 << 30


class VolumeDriverError(Exception):
    """A driver operation failed; the message says why, for the user message."""


@dataclass
class VolumeRef:
    """The facts about a volume a driver needs."""

    id: str
    size: int
    provider_location: str | None = None
    multiattach: bool = False
    # Admin metadata (readonly) and QoS specs of its type: they shape the export.
    admin_metadata: dict[str, str] = field(default_factory=dict)
    qos_specs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> VolumeRef:
        """From the dict the bus carries."""
        return cls(
            id=data["id"],
            size=int(data["size"]),
            provider_location=data.get("provider_location"),
            multiattach=bool(data.get("multiattach", False)),
            admin_metadata=dict(data.get("admin_metadata") or {}),
            qos_specs=dict(data.get("qos_specs") or {}),
        )


@dataclass
class SnapshotRef:
    """The facts about a snapshot a driver needs."""

    id: str
    volume_id: str
    size: int
    provider_location: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any]) -> SnapshotRef:
        return cls(
            id=data["id"],
            volume_id=data["volume_id"],
            size=int(data["size"]),
            provider_location=data.get("provider_location"),
        )


@dataclass
class Capabilities:
    """What a backend reports to the scheduler (Cinder's ``get_volume_stats``)."""

    volume_backend_name: str
    total_capacity_gb: float
    free_capacity_gb: float
    max_over_subscription_ratio: float
    reserved_percentage: int
    storage_protocol: str
    driver_version: str = "1.0"
    vendor_name: str = "onestack"
    thin_provisioning_support: bool = True
    thick_provisioning_support: bool = False
    multiattach: bool = True
    online_extend_support: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report, extra capabilities merged in (they may override nothing above)."""
        base = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**self.extra, **base}


class VolumeDriver(abc.ABC):
    """A storage backend. One instance per agent; every method may run concurrently."""

    name: str = "base"
    storage_protocol: str = "file"

    @abc.abstractmethod
    async def start(self) -> None:
        """Check and prepare the backend (Cinder's do_setup + check_for_setup_error)."""

    @abc.abstractmethod
    async def capabilities(self) -> Capabilities:
        """Capacity and capabilities, reported with every heartbeat."""

    @abc.abstractmethod
    async def create_volume(self, volume: VolumeRef) -> str | None:
        """Create an empty volume of ``volume.size`` GiB; returns its provider location."""

    @abc.abstractmethod
    async def create_volume_from_snapshot(
        self, volume: VolumeRef, snapshot: SnapshotRef
    ) -> str | None:
        """A new volume holding the snapshot's data, grown to ``volume.size``."""

    @abc.abstractmethod
    async def create_cloned_volume(self, volume: VolumeRef, source: VolumeRef) -> str | None:
        """A new volume holding ``source``'s data (which may be attached), grown to its size."""

    @abc.abstractmethod
    async def delete_volume(self, volume: VolumeRef) -> None:
        """Remove the volume's data; succeeds when it is already gone."""

    @abc.abstractmethod
    async def extend_volume(self, volume: VolumeRef, new_size: int) -> None:
        """Grow the volume to ``new_size`` GiB (also while attached)."""

    @abc.abstractmethod
    async def create_snapshot(self, snapshot: SnapshotRef, volume: VolumeRef) -> str | None:
        """A point-in-time copy of the volume (which may be attached); its provider location."""

    @abc.abstractmethod
    async def delete_snapshot(self, snapshot: SnapshotRef, volume: VolumeRef) -> None:
        """Remove a snapshot without changing the volume's data."""

    @abc.abstractmethod
    async def revert_to_snapshot(self, volume: VolumeRef, snapshot: SnapshotRef) -> None:
        """Make the volume's data the snapshot's again (the volume is detached)."""

    @abc.abstractmethod
    async def initialize_connection(
        self, volume: VolumeRef, connector: dict[str, Any]
    ) -> dict[str, Any]:
        """Export the volume to the host ``connector`` describes; Cinder's connection_info."""

    @abc.abstractmethod
    async def terminate_connection(self, volume: VolumeRef, connector: dict[str, Any]) -> None:
        """End the export to that host (when no other attachment there still needs it)."""

    @abc.abstractmethod
    async def copy_image_to_volume(self, volume: VolumeRef, image: Path, image_format: str) -> None:
        """Write a downloaded image file (qcow2, raw, ...) into the volume."""

    @abc.abstractmethod
    async def copy_volume_to_image(self, volume: VolumeRef, dest: Path, disk_format: str) -> None:
        """Write the volume's data to ``dest`` as an image of ``disk_format``."""

    @abc.abstractmethod
    async def copy_volume_from(self, volume: VolumeRef, source: dict[str, Any]) -> None:
        """Fill a new volume from another backend's export (``connection_info``): migration."""

    async def initialize_snapshot_connection(
        self, snapshot: SnapshotRef, connector: dict[str, Any]
    ) -> dict[str, Any]:
        """Export a snapshot's data, read-only, to the host ``connector`` describes (a backup
        of the snapshot reads it); Cinder's ``initialize_connection_snapshot``."""
        raise VolumeDriverError(f"the {self.name} backend cannot export snapshots")

    async def terminate_snapshot_connection(  # noqa: B027 - only exporting drivers act
        self, snapshot: SnapshotRef, connector: dict[str, Any]
    ) -> None:
        """End a snapshot's export to that host."""

    async def rename_volume(self, volume: VolumeRef, new_id: str) -> str | None:
        """Give the volume's data the name of volume ``new_id`` (a migrated in-use volume
        takes over the copy made for it); the new provider location."""
        raise VolumeDriverError(f"the {self.name} backend cannot rename volume data")

    @abc.abstractmethod
    async def local_path(self, volume: VolumeRef) -> tuple[Path, str]:
        """Where the volume's data is on this host, and its format (raw or qcow2)."""

    async def stop(self) -> None:  # noqa: B027 - optional: most drivers hold nothing
        """Release what :meth:`start` took (exports are kept: attachments outlive the agent)."""
