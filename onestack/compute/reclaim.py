"""The reclaim of soft-deleted servers: those SOFT_DELETED for longer than
``reclaim_instance_interval`` are deleted for good (Nova's ``_reclaim_queued_deletes``)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import select

from onestack.compute import vm_states
from onestack.compute.actions import open_action
from onestack.compute.models import Instance
from onestack.compute.service import ComputeService
from onestack.core.db import utcnow

log = logging.getLogger(__name__)

# How often the reclaim looks at most (a long interval is still checked this often).
MAX_PERIOD = 60.0


def reclaim_period(service: ComputeService) -> float | None:
    """Seconds between reclaims, None when servers are not soft-deleted."""
    interval = service.config.reclaim_instance_interval
    return min(interval, MAX_PERIOD) if interval > 0 else None


async def reclaim_soft_deleted(service: ComputeService) -> list[str]:
    """Delete the servers soft-deleted long enough ago; their uuids."""
    interval = service.config.reclaim_instance_interval
    if interval <= 0:
        return []
    cutoff = utcnow() - dt.timedelta(seconds=interval)
    request_id = f"req-{uuid.uuid4()}"
    async with service.db.session() as session:
        rows = (
            (
                await session.execute(
                    select(Instance).where(
                        Instance.vm_state == vm_states.SOFT_DELETED,
                        Instance.task_state.is_(None),
                        Instance.deleted.is_(False),
                        Instance.deleted_at <= cutoff,
                    )
                )
            )
            .scalars()
            .all()
        )
        for row in rows:
            row.task_state = vm_states.DELETING
            open_action(session, row.uuid, "delete", request_id, row.project_id, row.user_id)
        reclaimed = [row.uuid for row in rows]
    for server in reclaimed:
        log.info("reclaiming soft-deleted server %s", server)
        await service.conductor.cast("delete_server", uuid=server, request_id=request_id)
    return reclaimed
