"""Service records with heartbeats (up/down for ``compute service list`` and friends) and
periodic tasks.

Agents never write the database: they cast their heartbeat to the service
that owns the records (the conductor for compute), which calls
:meth:`ServiceRegistry.record`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from onestack.core.db import Database, UTCDateTime, affected, new_id, utcnow

log = logging.getLogger(__name__)


class ServiceTables:
    """The service-record table, declared on a service's own metadata (``<service>_service``)."""

    def __init__(self, metadata: MetaData, service: str):
        self.records = Table(
            f"{service}_service",
            metadata,
            Column("id", String(64), primary_key=True),
            Column("host", String(255), nullable=False),
            Column("binary", String(255), nullable=False),
            Column("topic", String(255), nullable=False, default=""),
            Column("zone", String(255), nullable=False, default="nova"),
            Column("disabled", Boolean, nullable=False, default=False),
            Column("disabled_reason", Text),
            Column("forced_down", Boolean, nullable=False, default=False),
            Column("report_count", Integer, nullable=False, default=0),
            Column("last_seen_at", UTCDateTime),
            Column("created_at", UTCDateTime, nullable=False),
            UniqueConstraint("host", "binary"),
        )


@dataclass(frozen=True)
class ServiceRecord:
    """One agent as ``service list`` shows it."""

    id: str
    host: str
    binary: str
    topic: str
    zone: str
    disabled: bool
    disabled_reason: str | None
    forced_down: bool
    last_seen_at: dt.datetime | None
    created_at: dt.datetime
    up: bool


class ServiceRegistry:
    """Records heartbeats and says which agents are up."""

    def __init__(self, db: Database, tables: ServiceTables, down_after: float = 60.0):
        self.db = db
        self.table = tables.records
        self.down_after = dt.timedelta(seconds=down_after)

    async def record(self, host: str, binary: str, topic: str = "", zone: str = "nova") -> None:
        """Note that ``binary`` on ``host`` is alive now (creating its record the first time)."""
        table = self.table
        now = utcnow()
        key = (table.c.host == host, table.c.binary == binary)
        async with self.db.session() as session:
            result = await session.execute(
                update(table)
                .where(*key)
                .values(last_seen_at=now, report_count=table.c.report_count + 1)
            )
            if affected(result):
                return
        try:
            async with self.db.session() as session:
                await session.execute(
                    insert(table).values(
                        id=new_id(),
                        host=host,
                        binary=binary,
                        topic=topic,
                        zone=zone,
                        disabled=False,
                        forced_down=False,
                        report_count=1,
                        last_seen_at=now,
                        created_at=now,
                    )
                )
        except IntegrityError:
            await self.record(host, binary, topic, zone)

    async def list(self, binary: str | None = None, host: str | None = None) -> list[ServiceRecord]:
        """Every record, with ``up`` computed from its last heartbeat."""
        query = select(self.table).order_by(self.table.c.binary, self.table.c.host)
        if binary:
            query = query.where(self.table.c.binary == binary)
        if host:
            query = query.where(self.table.c.host == host)
        async with self.db.session() as session:
            rows = (await session.execute(query)).all()
        now = utcnow()
        return [
            ServiceRecord(
                id=row.id,
                host=row.host,
                binary=row.binary,
                topic=row.topic,
                zone=row.zone,
                disabled=row.disabled,
                disabled_reason=row.disabled_reason,
                forced_down=row.forced_down,
                last_seen_at=row.last_seen_at,
                created_at=row.created_at,
                up=(
                    not row.forced_down
                    and row.last_seen_at is not None
                    and now - row.last_seen_at <= self.down_after
                ),
            )
            for row in rows
        ]

    async def delete(self, record_id: str) -> bool:
        """Forget a record (a host taken out of service); False when it does not exist."""
        async with self.db.session() as session:
            result = await session.execute(delete(self.table).where(self.table.c.id == record_id))
            return bool(affected(result))

    async def set_state(
        self,
        record_id: str,
        *,
        disabled: bool | None = None,
        disabled_reason: str | None = None,
        forced_down: bool | None = None,
    ) -> bool:
        """Disable/enable or force down a record; False when it does not exist."""
        values: dict[str, object] = {}
        if disabled is not None:
            values["disabled"] = disabled
            values["disabled_reason"] = disabled_reason if disabled else None
        if forced_down is not None:
            values["forced_down"] = forced_down
        async with self.db.session() as session:
            result = await session.execute(
                update(self.table).where(self.table.c.id == record_id).values(**values)
            )
            return bool(affected(result))


class PeriodicTask:
    """Runs a coroutine every ``interval`` seconds until stopped; failures are logged, not fatal."""

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Awaitable[object]],
        *,
        initial_delay: float | None = None,
    ):
        self.name = name
        self.interval = interval
        self.work = work
        # Spread first runs so many agents started together do not beat in step.
        self.initial_delay = random.uniform(0, interval) if initial_delay is None else initial_delay
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin running in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"periodic:{self.name}")

    async def _run(self) -> None:
        await asyncio.sleep(self.initial_delay)
        while True:
            try:
                await self.work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic task %s failed", self.name)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop and wait for the current run to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
