"""After a restart of the all-in-one process: settle work the in-process bus lost.

With RabbitMQ nothing is lost (messages wait in durable queues and are delivered
again if an agent died mid-way), so this runs only when the agents live in the
API process on the in-process bus: every volume, snapshot or backup still in a
transitional status was being worked on by a task that no longer exists.
Deletions are sent again (they are idempotent); everything else fails or returns
to where it was, with a user message, and quota held for it is given back.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from onestack.volume.backups import NoBackupService, backup_host, backup_payload
from onestack.volume.models import Backup, Snapshot, Volume, VolumeType
from onestack.volume.payloads import snapshot_payload, volume_payload
from onestack.volume.reports import without_extending
from onestack.volume.rpc import backup_topic
from onestack.volume.service import VolumeService
from onestack.volume.usage import growth_usage

log = logging.getLogger(__name__)

INTERRUPTED = "Interrupted by a restart of the service; nothing was changed."
# Statuses whose work changes nothing until it completes: the volume goes back.
RESUMABLE = ("extending", "retyping", "uploading", "reverting", "backing-up")


async def recover_interrupted(service: VolumeService) -> None:
    """Fail, roll back or resend what was in flight when the process stopped."""
    deletes: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
    messages: list[tuple[str, str, str]] = []
    releases: list[tuple[str, dict[str, int]]] = []
    async with service.db.session() as session:
        for volume in (await session.execute(select(Volume))).scalars():
            if volume.migration_status in ("starting", "migrating"):
                volume.migration_status = "error"
            if volume.status == "creating":
                volume.status = "error"
                messages.append((volume.project_id, volume.id, "VOLUME_CREATE"))
            elif volume.status == "restoring-backup":
                volume.status = "error_restoring"
                messages.append((volume.project_id, volume.id, "BACKUP_RESTORE"))
            elif volume.status in RESUMABLE:
                target = int(volume.admin_metadata.get("extending_to", 0) or 0)
                if volume.status == "extending" and target > volume.size:
                    type_row = await session.get(VolumeType, volume.volume_type_id)
                    usage = growth_usage(type_row.name if type_row else None, target - volume.size)
                    releases.append((volume.project_id, usage))
                volume.admin_metadata = without_extending(volume.admin_metadata)
                volume.status = volume.previous_status or "available"
                volume.previous_status = None
                messages.append((volume.project_id, volume.id, "VOLUME_RESTART"))
            elif volume.status == "deleting" and volume.host:
                deletes.append(("volume", volume.host, await volume_payload(session, volume), None))
        for snapshot in (await session.execute(select(Snapshot))).scalars():
            parent = await session.get(Volume, snapshot.volume_id)
            if snapshot.status == "creating":
                snapshot.status = "error"
            elif snapshot.status in ("restoring", "backing-up"):
                snapshot.status = "available"
            elif (
                snapshot.status == "deleting"
                and parent
                and parent.host
                and parent.status != "deleting"
            ):
                deletes.append(
                    ("snapshot", parent.host, snapshot_payload(snapshot),
                     await volume_payload(session, parent))
                )  # fmt: skip
        for backup in (await session.execute(select(Backup))).scalars():
            if backup.status == "creating":
                backup.status = "error"
                backup.fail_reason = INTERRUPTED
            elif backup.status == "restoring":
                backup.status = "available"
                backup.restore_volume_id = None
            elif backup.status == "deleting":
                deletes.append(("backup", backup.host or "", backup_payload(backup), None))
    for project, usage in releases:
        await service.quotas.release(project, usage)
    for project, ident, event in messages:
        await service.add_message(project, "VOLUME", ident, event, INTERRUPTED)
    for kind, where, payload, holder in deletes:
        log.info("resending the deletion of %s %s", kind, payload["id"])
        if kind == "volume":
            await service.agents.cast(where, "delete_volume", volume=payload, snapshots=[])
        elif kind == "snapshot":
            await service.agents.cast(where, "delete_snapshot", snapshot=payload, volume=holder)
        else:
            try:
                agent = where or await backup_host(service, None)
            except NoBackupService:
                continue
            await service.bus.cast(backup_topic(agent), "delete_backup", backup=payload)
