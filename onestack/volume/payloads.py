"""The plain dicts sent to agents over the bus (never database rows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.volume.models import QosSpecs, Snapshot, Volume, VolumeType


async def qos_of(session: AsyncSession, volume_type_id: str | None) -> dict[str, str]:
    """The front-end QoS specs of a volume type (the hypervisor applies them on attach)."""
    if volume_type_id is None:
        return {}
    row = (
        await session.execute(
            select(QosSpecs)
            .join(VolumeType, VolumeType.qos_specs_id == QosSpecs.id)
            .where(VolumeType.id == volume_type_id)
        )
    ).scalar_one_or_none()
    if row is None or row.consumer not in ("front-end", "both"):
        return {}
    return dict(row.specs)


async def volume_payload(session: AsyncSession, volume: Volume) -> dict[str, Any]:
    """What an agent needs to know about a volume."""
    return {
        "id": volume.id,
        "size": volume.size,
        "host": volume.host,
        "provider_location": volume.provider_location,
        "multiattach": volume.multiattach,
        "admin_metadata": dict(volume.admin_metadata or {}),
        "qos_specs": await qos_of(session, volume.volume_type_id),
        "project_id": volume.project_id,
        "status": volume.status,
        "attach_status": volume.attach_status,
    }


def snapshot_payload(snapshot: Snapshot) -> dict[str, Any]:
    """What an agent needs to know about a snapshot."""
    return {
        "id": snapshot.id,
        "volume_id": snapshot.volume_id,
        "size": snapshot.size,
        "provider_location": snapshot.provider_location,
        "project_id": snapshot.project_id,
    }


def backend_of(host: str | None) -> str | None:
    """``host@backend`` of a volume's ``host@backend#pool``."""
    return host.partition("#")[0] if host else None
