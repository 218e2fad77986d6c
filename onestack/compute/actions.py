"""Instance actions and their events (``server event list``): the API opens an action per
request; the conductor records each step's result as an event."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.compute.models import InstanceAction, InstanceActionEvent
from onestack.core.db import Database, utcnow


def open_action(
    session: AsyncSession,
    instance_uuid: str,
    action: str,
    request_id: str,
    project_id: str,
    user_id: str,
) -> None:
    """Start recording ``action`` (``create``, ``reboot``, ``resize``...) of a request."""
    session.add(
        InstanceAction(
            instance_uuid=instance_uuid,
            action=action,
            request_id=request_id,
            project_id=project_id,
            user_id=user_id,
        )
    )


async def record_event(
    db: Database,
    instance_uuid: str,
    request_id: str,
    event: str,
    *,
    host: str | None,
    started: dt.datetime | None = None,
    error: str | None = None,
    finishes: bool = True,
) -> None:
    """Add the finished step ``event`` to the request's action (its own transaction)."""
    async with db.session() as session:
        await add_event(session, instance_uuid, request_id, event, host=host, started=started,
                        error=error, finishes=finishes)  # fmt: skip


async def add_event(
    session: AsyncSession,
    instance_uuid: str,
    request_id: str,
    event: str,
    *,
    host: str | None,
    started: dt.datetime | None = None,
    error: str | None = None,
    finishes: bool = True,
) -> None:
    """Add the finished step ``event`` to the request's action; an error marks the action
    failed (``message`` "Error"), and ``finishes`` closes it."""
    action = (
        await session.execute(
            select(InstanceAction)
            .where(
                InstanceAction.instance_uuid == instance_uuid,
                InstanceAction.request_id == request_id,
            )
            .order_by(InstanceAction.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if action is None:
        return
    now = utcnow()
    session.add(
        InstanceActionEvent(
            action_id=action.id,
            event=event,
            host=host,
            result="Error" if error else "Success",
            traceback=error,
            start_time=started or now,
            finish_time=now,
        )
    )
    if error:
        action.message = "Error"
    if finishes or error:
        action.finish_time = now
