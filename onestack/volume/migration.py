"""Moving an attached (in-use) volume to another backend, as Cinder does.

The scheduler creates a hidden destination volume on the target backend (a row of
its own, ``use_quota`` false, ``admin_metadata.migration_source`` naming the user's
volume). Once it exists, compute is asked to swap the server's disk onto it (Nova's
swap volume: the guest copies its data). Compute then calls
``os-migrate_volume_completion`` on the user's volume: on success the destination's
data takes the user's volume id and the source data goes; on error the destination
goes and the user's volume stays as it was.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import select, update

from onestack.core.asgi.errors import APIError
from onestack.volume.models import Attachment, Backend, Volume, VolumeType
from onestack.volume.payloads import backend_of, volume_payload
from onestack.volume.usage import type_usage

if TYPE_CHECKING:
    from onestack.volume.service import VolumeService

log = logging.getLogger(__name__)

SOURCE_KEY = "migration_source"


async def start(
    service: VolumeService, volume_id: str, dest_host: str, new_type_id: str | None
) -> None:
    """Create the destination volume of ``volume_id`` on ``dest_host`` (``host@backend#pool``)."""
    async with service.db.session() as session:
        volume = await session.get(Volume, volume_id)
        if volume is None:
            return
        backend = await session.get(Backend, backend_of(dest_host) or "")
        target = Volume(
            project_id=volume.project_id,
            user_id=volume.user_id,
            name=volume.name,
            size=volume.size,
            status="creating",
            availability_zone=backend.availability_zone if backend else volume.availability_zone,
            volume_type_id=new_type_id or volume.volume_type_id,
            host=dest_host,
            multiattach=volume.multiattach,
            migration_status="target",
            admin_metadata={"temporary": "True", SOURCE_KEY: volume.id},
            use_quota=False,
        )
        session.add(target)
        volume.migration_status = "migrating"
        await session.flush()
        payload = await volume_payload(session, target)
    await service.agents.cast(dest_host, "create_volume", volume=payload, source={"kind": "blank"})


def source_of(volume: Volume) -> str | None:
    """The user's volume a hidden migration destination was made for."""
    if volume.migration_status != "target":
        return None
    return (volume.admin_metadata or {}).get(SOURCE_KEY)


async def destination_ready(service: VolumeService, target_id: str, source_id: str) -> None:
    """The destination exists: compute swaps each attached server's disk onto it."""
    async with service.db.session() as session:
        servers = (
            await session.scalars(
                select(Attachment.instance_uuid).where(
                    Attachment.volume_id == source_id, Attachment.instance_uuid.is_not(None)
                )
            )
        ).all()
    if len(servers) != 1:
        await fail(service, source_id, target_id, "the volume must be attached to one server")
        return
    body = {"volumeAttachment": {"volumeId": target_id}}
    path = f"/servers/{servers[0]}/os-volume_attachments/{source_id}"
    try:
        response = await service.client.request("compute", "PUT", path, json=body)
        reason = None if response.status_code == 202 else response.text
    except httpx.HTTPError as exc:
        reason = str(exc)
    if reason is not None:
        await fail(service, source_id, target_id, f"compute refused the swap: {reason}")


async def fail(service: VolumeService, source_id: str, target_id: str, reason: str) -> None:
    """The migration ended badly: the destination goes, the user's volume stays as it was."""
    async with service.db.session() as session:
        volume = await session.get(Volume, source_id)
        target = await session.get(Volume, target_id)
        if volume is None:
            return
        new_type = await session.get(VolumeType, target.volume_type_id) if target else None
        volume.migration_status = "error"
        retyping = volume.status == "retyping"
        if retyping:
            volume.status = volume.previous_status or "in-use"
            volume.previous_status = None
        project, size = volume.project_id, volume.size
        target_payload = None
        if target is not None:
            target.status = "deleting"
            target_payload = await volume_payload(session, target)
    if target_payload is not None and target_payload["host"]:
        await service.agents.cast(target_payload["host"], "delete_volume", volume=target_payload)
    if retyping and new_type is not None:
        await service.quotas.release(project, type_usage(new_type.name, size))
    await service.add_message(
        project, "VOLUME", source_id, "VOLUME_MIGRATE", f"Migration failed: {reason}"
    )


async def complete(service: VolumeService, source_id: str, target_id: str) -> None:
    """Compute moved the server onto the destination: the user's volume id takes over the
    destination's data (renamed on its backend), the source data and the hidden row go.
    If the destination cannot be renamed, nothing is removed (APIError, 500)."""
    async with service.db.session() as session:
        volume = await session.get(Volume, source_id)
        target = await session.get(Volume, target_id)
        assert volume is not None and target is not None
        source_payload = await volume_payload(session, volume)
        target_payload = await volume_payload(session, target)
    assert target.host is not None and volume.host is not None
    try:
        location = await service.agents.call(
            target.host, "adopt_volume", volume=target_payload, new_id=source_id
        )
    except Exception as exc:
        # The guest already uses the destination: both copies stay, the user's volume
        # keeps its source data, and compute keeps the destination volume attached.
        async with service.db.session() as session:
            await session.execute(
                update(Volume).where(Volume.id == source_id).values(migration_status="error")
            )
        raise APIError(
            f"The destination backend could not take over volume {source_id}: {exc}"
        ) from None
    try:
        await service.agents.call(volume.host, "drop_volume_data", volume=source_payload)
    except Exception:
        log.exception("migrated volume %s: the source data could not be removed", source_id)
    async with service.db.session() as session:
        volume = await session.get(Volume, source_id)
        target = await session.get(Volume, target_id)
        assert volume is not None and target is not None
        old_type = await session.get(VolumeType, volume.volume_type_id)
        new_type = await session.get(VolumeType, target.volume_type_id)
        volume.host, volume.provider_location = target.host, location
        volume.availability_zone = target.availability_zone
        volume.volume_type_id = target.volume_type_id
        volume.migration_status = "success"
        if volume.status == "retyping":
            volume.status = volume.previous_status or "in-use"
            volume.previous_status = None
        # Compute's new attachment (to the destination) now belongs to the user's volume.
        await session.execute(
            update(Attachment).where(Attachment.volume_id == target_id).values(volume_id=source_id)
        )
        await session.delete(target)
        project, size = volume.project_id, volume.size
    if old_type is not None and new_type is not None and old_type.id != new_type.id:
        # The API charged the new type when the retype began; the old one is free now.
        await service.quotas.release(project, type_usage(old_type.name, size))
