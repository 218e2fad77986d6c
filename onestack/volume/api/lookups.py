"""Lookups several handlers share: volume types by name or id with access rules,
availability zones, and quota holds answered with Cinder's 413 messages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from onestack.core.asgi.errors import APIError, PayloadTooLarge
from onestack.core.quota import QuotaExceeded, Reservation
from onestack.volume.api.common import caller, invalid, is_admin, not_found, service
from onestack.volume.models import Backend, VolumeType, VolumeTypeAccess


def type_visible(request: Request) -> Any:
    """Types a project may use: public ones and private ones shared with it."""
    shared = exists().where(
        VolumeTypeAccess.volume_type_id == VolumeType.id,
        VolumeTypeAccess.project_id == caller(request).project_id,
    )
    return or_(VolumeType.is_public.is_(True), shared)


async def find_type(request: Request, session: AsyncSession, ref: str) -> VolumeType:
    """A volume type by id or name the caller may use; 404 otherwise."""
    query = select(VolumeType).where(or_(VolumeType.id == ref, VolumeType.name == ref))
    if not is_admin(request):
        query = query.where(type_visible(request))
    row = (await session.execute(query)).scalars().first()
    if row is None:
        raise not_found("Volume type", ref)
    return row


async def default_type(request: Request, session: AsyncSession) -> VolumeType:
    """The configured default volume type (``__DEFAULT__`` unless set)."""
    name = service(request).config.default_volume_type
    row = (
        (await session.execute(select(VolumeType).where(VolumeType.name == name))).scalars().first()
    )
    if row is None:
        raise APIError(f"The default volume type {name!r} does not exist.", status=500)
    return row


async def zones(session: AsyncSession) -> set[str]:
    """Availability zones that have a backend, plus the configured default."""
    found = set((await session.execute(select(Backend.availability_zone).distinct())).scalars())
    return found


async def check_zone(request: Request, session: AsyncSession, zone: str) -> None:
    """400 for an availability zone no backend serves."""
    known = await zones(session) | {service(request).config.default_availability_zone}
    if zone not in known:
        raise invalid(f"Availability zone '{zone}' is invalid.")


def over_limit(exc: QuotaExceeded) -> APIError:
    """Cinder's 413 for a quota: the same sentences the real service writes."""
    resource = exc.resource
    if resource.startswith("volumes"):
        text = (
            f"VolumeLimitExceeded: Maximum number of volumes allowed ({exc.limit}) exceeded "
            f"for quota '{resource}'."
        )
    elif resource.startswith("snapshots"):
        text = f"SnapshotLimitExceeded: Maximum number of snapshots allowed ({exc.limit}) exceeded."
    elif resource == "backups":
        text = f"BackupLimitExceeded: Maximum number of backups allowed ({exc.limit}) exceeded."
    elif resource.startswith("backup_gigabytes"):
        text = (
            "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup "
            f"gigabytes quota. Requested {exc.requested}G, quota is {exc.limit}G and "
            f"{exc.in_use}G has been consumed."
        )
    else:
        text = (
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
            f"{resource} quota. Requested {exc.requested}G, quota is {exc.limit}G and "
            f"{exc.in_use}G has been consumed."
        )
    return PayloadTooLarge(text)


@asynccontextmanager
async def quota_held(
    request: Request,
    project_id: str,
    deltas: dict[str, int],
    type_names: Sequence[str] = (),
) -> AsyncIterator[Reservation]:
    """Hold ``deltas`` of the project's quota for the block (413 when it would go over);
    committed when the block succeeds, given back when it fails."""
    volume = service(request)
    await volume.refresh_quota_defaults(list(type_names))
    size = deltas.get("gigabytes", 0)
    limits = await volume.quotas.limits(project_id)
    per_volume = limits.get("per_volume_gigabytes", -1)
    if "volumes" in deltas and per_volume != -1 and size > per_volume:
        raise PayloadTooLarge(
            f"VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum "
            f"allowed limit {per_volume}G."
        )
    try:
        async with volume.quotas.hold(project_id, deltas) as reservation:
            yield reservation
    except QuotaExceeded as exc:
        raise over_limit(exc) from None
