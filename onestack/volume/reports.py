"""What agents report on ``volume-reports``, written to the database by the service.

Agents never touch the database (as compute agents report through the
conductor): every outcome arrives here, and each handler moves a status along
the path Cinder shows (creating → available, deleting → gone, extending →
available, ...). Handlers are idempotent: a report delivered twice changes
nothing the second time.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from onestack.core.asgi.errors import APIError
from onestack.core.db import affected, utcnow
from onestack.volume import migration
from onestack.volume.models import Attachment, Backend, Backup, Snapshot, Volume, VolumeType
from onestack.volume.service import VolumeService
from onestack.volume.usage import (
    backup_usage,
    growth_usage,
    snapshot_usage,
    type_usage,
    volume_usage,
)

log = logging.getLogger(__name__)

VOLUME_BINARY = "cinder-volume"
BACKUP_BINARY = "cinder-backup"


def without_extending(metadata: dict[str, str] | None) -> dict[str, str]:
    """Admin metadata less the size an extend was going to (it ended)."""
    return {k: v for k, v in (metadata or {}).items() if k != "extending_to"}


class VolumeReports:
    """The bus handler of ``volume-reports``."""

    def __init__(self, service: VolumeService):
        self.service = service

    @property
    def db(self) -> Any:
        return self.service.db

    async def _type_name(self, session: Any, type_id: str | None) -> str | None:
        if type_id is None:
            return None
        row = await session.get(VolumeType, type_id)
        return row.name if row is not None else None

    async def _message(self, project: str, kind: str, ident: str, event: str, text: str) -> None:
        await self.service.add_message(project, kind, ident, event, text)

    # Heartbeats -----------------------------------------------------------------------

    async def backend_report(
        self, host: str, availability_zone: str, capabilities: dict[str, Any]
    ) -> None:
        """A volume agent is alive; remember its backend's capacity for the scheduler."""
        await self.service.services.record(
            host, VOLUME_BINARY, topic=f"volume.{host}", zone=availability_zone
        )
        values = {"availability_zone": availability_zone, "capabilities": capabilities}
        async with self.db.session() as session:
            result = await session.execute(
                update(Backend).where(Backend.host == host).values(**values, updated_at=utcnow())
            )
            if affected(result):
                return
        try:
            async with self.db.session() as session:
                session.add(Backend(host=host, **values, updated_at=utcnow()))
        except IntegrityError:
            # A concurrent report of the same backend inserted it first: update that row.
            await self.backend_report(host, availability_zone, capabilities)

    async def backup_report(self, host: str, availability_zone: str) -> None:
        """A backup agent is alive."""
        await self.service.services.record(
            host, BACKUP_BINARY, topic=f"backup.{host}", zone=availability_zone
        )

    # Volumes --------------------------------------------------------------------------

    async def volume_created(
        self,
        volume_id: str,
        provider_location: str | None,
        restore_backup: str | None = None,
        image_metadata: dict[str, str] | None = None,
    ) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != "creating":
                return
            volume.provider_location = provider_location
            volume.launched_at = utcnow()
            if image_metadata:
                volume.image_metadata = image_metadata
                volume.bootable = True
            if restore_backup:
                volume.status = "restoring-backup"
            else:
                volume.status = "available"
            migrating = migration.source_of(volume)
        if migrating:
            await migration.destination_ready(self.service, volume_id, migrating)
        if restore_backup:
            from onestack.volume.backups import start_restore

            await start_restore(self.service, restore_backup, volume_id)

    async def _fail(self, model: Any, ident: str, status: str, event: str, reason: str) -> None:
        """A volume or snapshot whose operation failed: ``status``, and a user message why."""
        async with self.db.session() as session:
            row = await session.get(model, ident)
            if row is None:
                return
            row.status = status
            project = row.project_id
        kind = "VOLUME" if model is Volume else "SNAPSHOT"
        await self._message(project, kind, ident, event, reason)

    async def volume_create_failed(self, volume_id: str, reason: str) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            migrating = migration.source_of(volume) if volume else None
        if migrating:
            await migration.fail(self.service, migrating, volume_id, reason)
            return
        await self._fail(Volume, volume_id, "error", "VOLUME_CREATE", reason)

    async def volume_deleted(self, volume_id: str) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            type_name = await self._type_name(session, volume.volume_type_id)
            project, size, counted = volume.project_id, volume.size, volume.use_quota
            # Snapshot reports of a cascade may still be on their way: settle them here
            # (whichever handler deletes a snapshot row releases its quota).
            leftovers = list(
                (await session.execute(select(Snapshot).where(Snapshot.volume_id == volume_id)))
                .scalars()
                .all()
            )
            released = []
            for snapshot in leftovers:
                gone = await session.execute(delete(Snapshot).where(Snapshot.id == snapshot.id))
                if affected(gone):
                    released.append(snapshot)
            removed = await session.execute(delete(Volume).where(Volume.id == volume_id))
            if not affected(removed):
                return
        if counted:
            await self.service.quotas.release(project, volume_usage(type_name, size))
        for snapshot in released:
            if snapshot.use_quota:
                await self.service.quotas.release(project, snapshot_usage(type_name, snapshot.size))

    async def volume_delete_failed(self, volume_id: str, reason: str) -> None:
        await self._fail(Volume, volume_id, "error_deleting", "VOLUME_DELETE", reason)

    async def volume_extended(self, volume_id: str, new_size: int) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != "extending":
                return
            volume.size = new_size
            volume.status = volume.previous_status or "available"
            volume.previous_status = None
            volume.admin_metadata = without_extending(volume.admin_metadata)
            servers = (
                await session.execute(
                    select(Attachment.instance_uuid).where(
                        Attachment.volume_id == volume_id,
                        Attachment.attach_status == "attached",
                    )
                )
            ).scalars()
            attached = [s for s in servers if s]
        if attached:
            await self._tell_compute("volume-extended", volume_id, attached)

    async def _tell_compute(self, event: str, volume_id: str, servers: list[str]) -> None:
        """Nova's external events: the hypervisor grows the attached disk it sees."""
        body = {
            "events": [
                {"name": event, "server_uuid": s, "tag": volume_id, "status": "completed"}
                for s in servers
            ]
        }
        try:
            await self.service.client.request(
                "compute", "POST", "/os-server-external-events", json=body
            )
        except (APIError, httpx.HTTPError) as exc:
            log.info("compute not told of %s for volume %s: %s", event, volume_id, exc)

    async def volume_extend_failed(self, volume_id: str, reason: str, new_size: int = 0) -> None:
        """The volume keeps its size and data; the quota taken for the growth goes back."""
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != "extending":
                return
            type_name = await self._type_name(session, volume.volume_type_id)
            project, delta = volume.project_id, new_size - volume.size
        if delta > 0:
            await self.service.quotas.release(project, growth_usage(type_name, delta))
        await self._back_to_previous(
            volume_id, "extending", "VOLUME_EXTEND", f"Extend failed: {reason}"
        )

    async def _back_to_previous(self, volume_id: str, status: str, event: str, reason: str) -> None:
        """A request that changed nothing: the volume returns to where it was."""
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != status:
                return
            volume.status = volume.previous_status or "available"
            volume.previous_status = None
            volume.admin_metadata = without_extending(volume.admin_metadata)
            project = volume.project_id
        await self._message(project, "VOLUME", volume_id, event, reason)

    async def volume_reverted(self, volume_id: str, snapshot_id: str) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            snapshot = await session.get(Snapshot, snapshot_id)
            if volume is not None and volume.status == "reverting":
                volume.status = "available"
            if snapshot is not None and snapshot.status == "restoring":
                snapshot.status = "available"

    async def volume_revert_failed(self, volume_id: str, reason: str) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(Snapshot)
                .where(Snapshot.volume_id == volume_id, Snapshot.status == "restoring")
                .values(status="available")
            )
        await self._back_to_previous(
            volume_id, "reverting", "VOLUME_REVERT", f"Revert failed: {reason}"
        )

    async def volume_uploaded(self, volume_id: str, image_id: str) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != "uploading":
                return
            volume.status = volume.previous_status or "available"
            volume.previous_status = None

    async def volume_upload_failed(self, volume_id: str, reason: str, image_id: str) -> None:
        await self._back_to_previous(
            volume_id, "uploading", "VOLUME_UPLOAD", f"Upload to image {image_id} failed: {reason}"
        )

    async def volume_migrated(
        self,
        volume_id: str,
        host: str,
        provider_location: str | None,
        new_type_id: str | None = None,
    ) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            old_type = await self._type_name(session, volume.volume_type_id)
            new_type = await self._type_name(session, new_type_id)
            volume.host = host
            volume.provider_location = provider_location
            volume.migration_status = "success"
            backend = await session.get(Backend, host.partition("#")[0])
            if backend is not None:
                volume.availability_zone = backend.availability_zone
            if new_type_id:
                volume.volume_type_id = new_type_id
                volume.status = volume.previous_status or "available"
                volume.previous_status = None
            project, size = volume.project_id, volume.size
        if new_type_id and old_type != new_type:
            # The API charged the new type when the retype began; the old one is free now.
            await self.service.quotas.release(project, type_usage(old_type, size))

    async def volume_migrate_failed(
        self, volume_id: str, reason: str, new_type_id: str | None = None
    ) -> None:
        async with self.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            volume.migration_status = "error"
            if volume.status == "retyping":
                volume.status = volume.previous_status or "available"
                volume.previous_status = None
            new_type = await self._type_name(session, new_type_id)
            project, size = volume.project_id, volume.size
        if new_type_id:
            await self.service.quotas.release(project, type_usage(new_type, size))
        await self._message(
            project, "VOLUME", volume_id, "VOLUME_MIGRATE", f"Migration failed: {reason}"
        )

    # Snapshots ------------------------------------------------------------------------

    async def snapshot_created(self, snapshot_id: str, provider_location: str | None) -> None:
        async with self.db.session() as session:
            snapshot = await session.get(Snapshot, snapshot_id)
            if snapshot is None or snapshot.status != "creating":
                return
            snapshot.status = "available"
            snapshot.progress = "100%"
            snapshot.provider_location = provider_location

    async def snapshot_create_failed(self, snapshot_id: str, reason: str) -> None:
        await self._fail(Snapshot, snapshot_id, "error", "SNAPSHOT_CREATE", reason)

    async def snapshot_deleted(self, snapshot_id: str) -> None:
        async with self.db.session() as session:
            snapshot = await session.get(Snapshot, snapshot_id)
            if snapshot is None:
                return
            type_name = await self._type_name(session, snapshot.volume_type_id)
            project, size, counted = snapshot.project_id, snapshot.size, snapshot.use_quota
            removed = await session.execute(delete(Snapshot).where(Snapshot.id == snapshot_id))
            if not affected(removed):
                return
        if counted:
            await self.service.quotas.release(project, snapshot_usage(type_name, size))

    async def snapshot_delete_failed(self, snapshot_id: str, reason: str) -> None:
        await self._fail(Snapshot, snapshot_id, "error_deleting", "SNAPSHOT_DELETE", reason)

    async def backup_progress(self, backup_id: str, progress: int) -> None:
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is not None and backup.status in ("creating", "restoring"):
                backup.progress = max(0, min(int(progress), 100))

    async def backup_created(
        self,
        backup_id: str,
        object_count: int,
        container: str,
        object_prefix: str,
        changed_chunks: int = 0,
    ) -> None:
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is None or backup.status != "creating":
                return
            backup.status = "available"
            backup.progress = 100
            backup.object_count = object_count
            backup.container = container
            backup.object_prefix = object_prefix
            await self._source_back(session, backup)

    async def _volume_back(self, session: Any, volume_id: str, status: str) -> None:
        volume = await session.get(Volume, volume_id)
        if volume is not None and volume.status == status:
            volume.status = volume.previous_status or "available"
            volume.previous_status = None

    async def _source_back(self, session: Any, backup: Backup) -> None:
        """The volume or snapshot a backup read is no longer ``backing-up``."""
        if backup.snapshot_id is None:
            await self._volume_back(session, backup.volume_id, "backing-up")
            return
        snapshot = await session.get(Snapshot, backup.snapshot_id)
        if snapshot is not None and snapshot.status == "backing-up":
            snapshot.status = "available"

    async def backup_create_failed(self, backup_id: str, reason: str) -> None:
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is None:
                return
            backup.status = "error"
            backup.fail_reason = reason[:255]
            await self._source_back(session, backup)
            if backup.parent_id:
                parent = await session.get(Backup, backup.parent_id)
                if parent is not None and parent.num_dependent_backups > 0:
                    parent.num_dependent_backups -= 1

    async def backup_deleted(self, backup_id: str) -> None:
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is None:
                return
            project, size = backup.project_id, backup.size
            if backup.parent_id:
                parent = await session.get(Backup, backup.parent_id)
                if parent is not None and parent.num_dependent_backups > 0:
                    parent.num_dependent_backups -= 1
            await session.delete(backup)
        await self.service.quotas.release(project, backup_usage(size))

    async def backup_delete_failed(self, backup_id: str, reason: str) -> None:
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is None:
                return
            backup.status = "error_deleting"
            backup.fail_reason = reason[:255]

    async def backup_restored(
        self, backup_id: str, volume_id: str, volume_meta: dict[str, Any] | None = None
    ) -> None:
        """A restore ended; the volume takes the backed-up volume's bootable flag and image
        metadata (when the backup recorded them)."""
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is not None and backup.status == "restoring":
                backup.status = "available"
                backup.restore_volume_id = None
            volume = await session.get(Volume, volume_id)
            if volume is not None and volume.status == "restoring-backup":
                volume.status = "available"
                if volume_meta:
                    volume.bootable = bool(volume_meta.get("bootable"))
                    volume.image_metadata = dict(volume_meta.get("image_metadata") or {})

    async def backup_restore_failed(self, backup_id: str, volume_id: str, reason: str) -> None:
        async with self.db.session() as session:
            backup = await session.get(Backup, backup_id)
            if backup is not None and backup.status == "restoring":
                backup.status = "available"
                backup.restore_volume_id = None
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            volume.status = "error_restoring"
            project = volume.project_id
        await self._message(
            project,
            "VOLUME",
            volume_id,
            "BACKUP_RESTORE",
            f"Restore of backup {backup_id} failed: {reason}",
        )
