"""Service-side backup work: choosing a backup agent and sending it what it needs.

The backup agent (``backup/agent.py``) never reads the database: it gets the
backup, its chain of parents (for incrementals and restores) and the volume as
plain dicts here, and reports back on ``volume-reports``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from onestack.volume.models import Backup, Volume
from onestack.volume.payloads import volume_payload
from onestack.volume.rpc import backup_topic
from onestack.volume.service import VolumeService

BACKUP_BINARY = "cinder-backup"


class NoBackupService(Exception):
    """No backup agent is up."""


async def backup_host(service: VolumeService, volume_host: str | None) -> str:
    """An up backup agent, on the volume's machine when there is one (it reads the file)."""
    records = [
        r for r in await service.services.list(binary=BACKUP_BINARY) if r.up and not r.disabled
    ]
    if not records:
        raise NoBackupService("Service cinder-backup could not be found: no backup agent is up.")
    machine = (volume_host or "").partition("@")[0]
    for record in records:
        if record.host == machine:
            return record.host
    return records[0].host


def volume_meta(volume: Volume) -> dict[str, Any]:
    """What a backup keeps of its volume beyond the bytes, for restores to give back."""
    return {"bootable": volume.bootable, "image_metadata": dict(volume.image_metadata or {})}


def backup_payload(backup: Backup) -> dict[str, Any]:
    """What a backup agent needs to know about one backup."""
    return {
        "id": backup.id,
        "volume_id": backup.volume_id,
        "size": backup.size,
        "container": backup.container,
        "object_prefix": backup.object_prefix,
        "parent_id": backup.parent_id,
        "project_id": backup.project_id,
    }


async def chain_of(session: AsyncSession, backup: Backup) -> list[dict[str, Any]]:
    """The backup and its parents, the full backup first."""
    chain = [backup_payload(backup)]
    current = backup
    while current.parent_id:
        parent = await session.get(Backup, current.parent_id)
        if parent is None:
            break
        chain.insert(0, backup_payload(parent))
        current = parent
    return chain


async def start_restore(service: VolumeService, backup_id: str, volume_id: str) -> None:
    """Restore a backup into a volume that is ``restoring-backup`` (new or existing)."""
    async with service.db.session() as session:
        backup = await session.get(Backup, backup_id)
        volume = await session.get(Volume, volume_id)
        if backup is None or volume is None:
            return
        try:
            host = await backup_host(service, volume.host)
        except NoBackupService as exc:
            volume.status = "error_restoring"
            project = volume.project_id
            reason = str(exc)
        else:
            backup.status = "restoring"
            backup.restore_volume_id = volume_id
            chain = await chain_of(session, backup)
            payload = await volume_payload(session, volume)
            reason = ""
    if reason:
        await service.add_message(project, "VOLUME", volume_id, "BACKUP_RESTORE", reason)
        return
    await service.bus.cast(backup_topic(host), "restore_backup", chain=chain, volume=payload)
