"""Volume deletion, shared by ``DELETE /v3/volumes/{id}`` and the force-delete action.

The checks Cinder makes before a volume may go, then either an immediate
removal (never placed on a backend) or ``deleting`` and a cast to its agent.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from onestack.core.asgi.errors import APIError, BadRequest
from onestack.core.db import affected
from onestack.volume.models import Attachment, Snapshot, Volume, VolumeType
from onestack.volume.payloads import snapshot_payload, volume_payload
from onestack.volume.service import VolumeService
from onestack.volume.usage import snapshot_usage, volume_usage

DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_managing")
SNAPSHOT_DELETABLE = ("available", "error", "error_deleting")


def invalid_volume(message: str) -> APIError:
    return BadRequest(f"Invalid volume: {message}")


async def delete_volume(
    service: VolumeService, volume_id: str, *, cascade: bool = False, force: bool = False
) -> None:
    """Start deleting a volume (the caller has checked it may see it); 400 when it may not go."""
    async with service.db.session() as session:
        volume = await session.get(Volume, volume_id)
        if volume is None or volume.status == "deleting":
            return
        if volume.migration_status in ("migrating", "starting"):
            raise invalid_volume("Volume is being migrated.")
        if not force and volume.status not in DELETABLE:
            raise invalid_volume(
                "Volume status must be available or error or error_restoring or "
                "error_extending or error_managing and must not be migrating, attached, "
                f"belong to a group, have snapshots or be awaiting a transfer (it is "
                f"{volume.status})."
            )
        attached = await session.scalar(
            select(func.count())
            .select_from(Attachment)
            .where(Attachment.volume_id == volume_id, Attachment.attach_status != "detached")
        )
        if attached:
            raise invalid_volume("Volume is attached; detach it first.")
        snapshots = list(
            (
                await session.execute(select(Snapshot).where(Snapshot.volume_id == volume_id))
            ).scalars()
        )
        if snapshots and not cascade:
            raise invalid_volume(f"Volume still has {len(snapshots)} dependent snapshots.")
        if any(s.status not in SNAPSHOT_DELETABLE for s in snapshots):
            raise invalid_volume("Volume has snapshots that are busy; they cannot be deleted now.")
        started = await session.execute(
            update(Volume)
            .where(Volume.id == volume_id, Volume.status == volume.status)
            .values(status="deleting", previous_status=volume.status)
        )
        if not affected(started):
            raise invalid_volume("Volume status changed meanwhile; try again.")
        for snapshot in snapshots:
            snapshot.status = "deleting"
        if volume.host is None:
            type_row = await session.get(VolumeType, volume.volume_type_id)
            type_name = type_row.name if type_row else None
            project, size = volume.project_id, volume.size
            for snapshot in snapshots:
                await session.delete(snapshot)
            await session.delete(volume)
            removed = [(s.size, s.use_quota) for s in snapshots]
            counted = volume.use_quota
            payload = None
        else:
            payload = await volume_payload(session, volume)
            snapshot_payloads = [snapshot_payload(s) for s in snapshots]
    if payload is None:
        if counted:
            await service.quotas.release(project, volume_usage(type_name, size))
        for snapshot_size, snapshot_counted in removed:
            if snapshot_counted:
                await service.quotas.release(project, snapshot_usage(type_name, snapshot_size))
        return
    await service.agents.cast(
        payload["host"], "delete_volume", volume=payload, snapshots=snapshot_payloads
    )
