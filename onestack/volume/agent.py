"""The volume agent of one backend (``host@backend``): Cinder's volume manager.

It consumes ``volume.<host@backend>``, does the storage work through its
driver, and reports every outcome and a heartbeat with the backend's capacity on
``volume-reports``; it never touches the database. Runs inside ``onestack up``
or alone: ``onestack agent volume --host H --backend B``.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings, VolumeBackendSettings
from onestack.core.heartbeat import PeriodicTask
from onestack.volume import images
from onestack.volume.drivers import make_driver
from onestack.volume.drivers.base import SnapshotRef, VolumeDriver, VolumeDriverError, VolumeRef
from onestack.volume.rpc import COPY_TIMEOUT, AgentClient, ReportClient, agent_topic

log = logging.getLogger(__name__)


def backend_settings(settings: Settings, name: str) -> VolumeBackendSettings:
    """The configured backend ``name``, or a ``file`` backend of that name."""
    for backend in settings.volume.backends:
        if backend.name == name:
            return backend
    return VolumeBackendSettings(name=name)


class VolumeAgent:
    """Does the storage work of one backend; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        backend: VolumeBackendSettings,
        *,
        host: str | None = None,
        client: ServiceClient | None = None,
        driver: VolumeDriver | None = None,
    ):
        self.settings = settings
        self.bus = bus
        self.backend = backend
        # The machine: compute hosts of the same name attach by path.
        self.machine = host or settings.volume.host or socket.gethostname()
        self.host = f"{self.machine}@{backend.name}"
        self.client = client
        self.driver = driver or make_driver(
            backend,
            settings.data_dir,
            host=self.machine,
            export_address=settings.volume.export_address,
        )
        self.reports = ReportClient(bus)
        self.agents = AgentClient(bus)
        self.scratch = settings.data_dir / "volume-scratch"
        self._consumer: Consumer | None = None
        self._heartbeat = PeriodicTask(
            f"volume-agent-{self.host}", settings.volume.report_interval, self.report_backend
        )

    async def start(self) -> None:
        """Prepare the backend, report it, and take work."""
        await self.driver.start()
        self.scratch.mkdir(parents=True, exist_ok=True)
        await self.report_backend()
        self._consumer = await self.bus.consume(agent_topic(self.host), self)
        self._heartbeat.start()

    async def stop(self) -> None:
        await self._heartbeat.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        await self.driver.stop()

    async def report_backend(self) -> None:
        """Heartbeat with capacity and capabilities (the scheduler's view of this backend)."""
        capabilities = await self.driver.capabilities()
        await self.reports.report(
            "backend_report",
            host=self.host,
            availability_zone=self.backend.availability_zone,
            capabilities=capabilities.as_dict(),
        )

    async def _failed(self, method: str, exc: Exception, **ids: Any) -> None:
        log.warning("%s on %s failed: %s", method, self.host, exc)
        reason = str(exc) if isinstance(exc, VolumeDriverError) else f"{type(exc).__name__}: {exc}"
        await self.reports.report(method, reason=reason, **ids)

    # Volumes --------------------------------------------------------------------------

    async def create_volume(self, volume: dict[str, Any], source: dict[str, Any]) -> None:
        """Create a volume (blank, or from a snapshot, volume, image or backup)."""
        ref = VolumeRef.of(volume)
        extra: dict[str, Any] = {}
        try:
            kind = source.get("kind", "blank")
            if kind == "snapshot":
                location = await self.driver.create_volume_from_snapshot(
                    ref, SnapshotRef.of(source["snapshot"])
                )
            elif kind == "volume":
                location = await self.driver.create_cloned_volume(
                    ref, VolumeRef.of(source["volume"])
                )
            else:
                location = await self.driver.create_volume(ref)
            if kind == "image":
                extra = await self._copy_image(ref, source["image_id"])
        except Exception as exc:
            await self._failed("volume_create_failed", exc, volume_id=ref.id)
            return
        await self.reports.report(
            "volume_created",
            volume_id=ref.id,
            provider_location=location,
            restore_backup=source.get("backup_id"),
            **extra,
        )

    async def _copy_image(self, volume: VolumeRef, image_id: str) -> dict[str, Any]:
        if self.client is None:
            raise VolumeDriverError("this agent cannot reach the image service")
        meta = await images.image_meta(self.client, image_id)
        scratch = self.scratch / f"image-{volume.id}"
        try:
            await images.download(self.client, image_id, scratch)
            await self.driver.copy_image_to_volume(
                volume, scratch, meta.get("disk_format") or "raw"
            )
        finally:
            scratch.unlink(missing_ok=True)
        return {"image_metadata": image_metadata(meta)}

    async def delete_volume(
        self, volume: dict[str, Any], snapshots: list[dict[str, Any]] | None = None
    ) -> None:
        """Delete a volume, after its ``snapshots`` when the deletion cascades."""
        ref = VolumeRef.of(volume)
        for snapshot in snapshots or []:
            if not await self._delete_snapshot(snapshot, volume):
                await self.reports.report(
                    "volume_delete_failed",
                    volume_id=ref.id,
                    reason=f"snapshot {snapshot['id']} could not be deleted",
                )
                return
        try:
            await self.driver.delete_volume(ref)
        except Exception as exc:
            await self._failed("volume_delete_failed", exc, volume_id=ref.id)
            return
        await self.reports.report("volume_deleted", volume_id=ref.id)

    async def extend_volume(self, volume: dict[str, Any], new_size: int) -> None:
        ref = VolumeRef.of(volume)
        try:
            await self.driver.extend_volume(ref, new_size)
        except Exception as exc:
            await self._failed("volume_extend_failed", exc, volume_id=ref.id, new_size=new_size)
            return
        await self.reports.report("volume_extended", volume_id=ref.id, new_size=new_size)

    async def revert_to_snapshot(self, volume: dict[str, Any], snapshot: dict[str, Any]) -> None:
        ref = VolumeRef.of(volume)
        try:
            await self.driver.revert_to_snapshot(ref, SnapshotRef.of(snapshot))
        except Exception as exc:
            await self._failed("volume_revert_failed", exc, volume_id=ref.id)
            return
        await self.reports.report("volume_reverted", volume_id=ref.id, snapshot_id=snapshot["id"])

    async def copy_volume_to_image(
        self, volume: dict[str, Any], image_id: str, disk_format: str
    ) -> None:
        """Upload the volume's data as the (already created) image ``image_id``."""
        ref = VolumeRef.of(volume)
        scratch = self.scratch / f"upload-{image_id}"
        try:
            if self.client is None:
                raise VolumeDriverError("this agent cannot reach the image service")
            await self.driver.copy_volume_to_image(ref, scratch, disk_format)
            await images.upload(self.client, image_id, scratch)
        except Exception as exc:
            if self.client is not None:
                await images.delete(self.client, image_id)
            await self._failed("volume_upload_failed", exc, volume_id=ref.id, image_id=image_id)
            return
        finally:
            scratch.unlink(missing_ok=True)
        await self.reports.report("volume_uploaded", volume_id=ref.id, image_id=image_id)

    # Snapshots ------------------------------------------------------------------------

    async def create_snapshot(self, snapshot: dict[str, Any], volume: dict[str, Any]) -> None:
        ref = SnapshotRef.of(snapshot)
        try:
            location = await self.driver.create_snapshot(ref, VolumeRef.of(volume))
        except Exception as exc:
            await self._failed("snapshot_create_failed", exc, snapshot_id=ref.id)
            return
        await self.reports.report(
            "snapshot_created", snapshot_id=ref.id, provider_location=location
        )

    async def delete_snapshot(self, snapshot: dict[str, Any], volume: dict[str, Any]) -> None:
        await self._delete_snapshot(snapshot, volume)

    async def _delete_snapshot(self, snapshot: dict[str, Any], volume: dict[str, Any]) -> bool:
        ref = SnapshotRef.of(snapshot)
        try:
            await self.driver.delete_snapshot(ref, VolumeRef.of(volume))
        except Exception as exc:
            await self._failed("snapshot_delete_failed", exc, snapshot_id=ref.id)
            return False
        await self.reports.report("snapshot_deleted", snapshot_id=ref.id)
        return True

    # Connections (calls: the caller waits for the answer) -----------------------------

    async def initialize_connection(
        self, volume: dict[str, Any], connector: dict[str, Any]
    ) -> dict[str, Any]:
        """Export the volume to the connector's host; Cinder's connection_info."""
        return await self.driver.initialize_connection(VolumeRef.of(volume), connector)

    async def terminate_connection(self, volume: dict[str, Any], connector: dict[str, Any]) -> None:
        await self.driver.terminate_connection(VolumeRef.of(volume), connector)

    async def initialize_snapshot_connection(
        self, snapshot: dict[str, Any], connector: dict[str, Any]
    ) -> dict[str, Any]:
        """Export a snapshot read-only to the connector's host (a backup of it)."""
        return await self.driver.initialize_snapshot_connection(SnapshotRef.of(snapshot), connector)

    async def terminate_snapshot_connection(
        self, snapshot: dict[str, Any], connector: dict[str, Any]
    ) -> None:
        await self.driver.terminate_snapshot_connection(SnapshotRef.of(snapshot), connector)

    # Migration: the source agent drives it, the destination pulls the data ------------

    async def migrate_volume(
        self, volume: dict[str, Any], dest_host: str, new_type_id: str | None
    ) -> None:
        """Copy the volume to ``dest_host``'s backend, then drop this copy.

        The original stays untouched until the destination holds a complete copy,
        so a failed migration loses nothing.
        """
        ref = VolumeRef.of(volume)
        try:
            location = await self.agents.call(
                dest_host,
                "receive_volume",
                volume=volume,
                source_host=self.host,
                timeout=COPY_TIMEOUT,
            )
        except Exception as exc:
            await self._failed(
                "volume_migrate_failed", exc, volume_id=ref.id, new_type_id=new_type_id
            )
            return
        try:
            await self.driver.delete_volume(ref)
        except Exception:
            log.exception("migrated volume %s: the source copy could not be removed", ref.id)
        await self.reports.report(
            "volume_migrated",
            volume_id=ref.id,
            host=dest_host,
            provider_location=location,
            new_type_id=new_type_id,
        )

    async def adopt_volume(self, volume: dict[str, Any], new_id: str) -> str | None:
        """A migrated in-use volume ends: its copy here takes the name of volume ``new_id``."""
        return await self.driver.rename_volume(VolumeRef.of(volume), new_id)

    async def drop_volume_data(self, volume: dict[str, Any]) -> None:
        """Remove the data a migrated volume left here (its record lives on elsewhere)."""
        await self.driver.delete_volume(VolumeRef.of(volume))

    async def receive_volume(self, volume: dict[str, Any], source_host: str) -> str | None:
        """On the destination: pull the volume's data from ``source_host``'s export."""
        ref = VolumeRef.of(volume)
        connector = {"host": self.machine, "purpose": "migration"}
        connection = await self.agents.call(
            source_host, "initialize_connection", volume=volume, connector=connector
        )
        try:
            await self.driver.copy_volume_from(ref, connection)
        except Exception:
            await self.driver.delete_volume(ref)
            raise
        finally:
            await self.agents.call(
                source_host, "terminate_connection", volume=volume, connector=connector
            )
        try:
            return str((await self.driver.local_path(ref))[0])
        except VolumeDriverError:
            return f"{self.driver.name}://{ref.id}"


def image_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """The image properties a volume keeps (``volume_image_metadata``), as strings."""
    keep = ("id", "name", "disk_format", "container_format", "checksum", "size", "min_disk",
            "min_ram")  # fmt: skip
    values = {("image_id" if k == "id" else "image_name" if k == "name" else k): meta.get(k)
              for k in keep}  # fmt: skip
    reserved = {"id", "name", "status", "visibility", "owner", "protected", "os_hidden",
                "file", "schema", "self", "locations", "direct_url", "tags", "created_at",
                "updated_at", "virtual_size", "os_hash_algo", "os_hash_value", "stores",
                *keep}  # fmt: skip
    values.update({k: v for k, v in meta.items() if k not in reserved})
    return {k: str(v) for k, v in values.items() if v is not None}
