"""Per-project quotas with reservations that concurrent requests cannot race past.

A request reserves what it is about to use; the reservation becomes usage on
commit or is returned on rollback (or when it expires, if its holder died).
The check and the reservation are one conditional ``UPDATE`` — ``in_use +
reserved + delta <= limit`` — so two requests can never both take the last
unit, on SQLite, PostgreSQL or MariaDB alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.core.db import (
    Database,
    UTCDateTime,
    affected,
    new_id,
    retry_on_deadlock,
    utcnow,
)

UNLIMITED = -1


class _OverLimit(Exception):
    """A reservation passed a limit (its transaction rolls back); carries the limits read."""

    def __init__(self, limits: dict[str, int]):
        super().__init__("over quota")
        self.limits = limits


class QuotaExceeded(Exception):
    """A reservation would take a project over its limit."""

    def __init__(self, resource: str, requested: int, in_use: int, limit: int):
        self.resource = resource
        self.requested = requested
        self.in_use = in_use
        self.limit = limit
        super().__init__(
            f"Quota exceeded for {resource}: Requested {requested}, but already used "
            f"{in_use} of {limit} {resource}"
        )


class QuotaTables:
    """The quota tables, declared on a service's own metadata so its migrations carry them.

    Named ``<service>_quota_*`` so services can share one database.
    """

    def __init__(self, metadata: MetaData, service: str):
        self.limit = Table(
            f"{service}_quota_limit",
            metadata,
            Column("project_id", String(64), primary_key=True),
            Column("resource", String(255), primary_key=True),
            Column("hard_limit", Integer, nullable=False),
        )
        self.usage = Table(
            f"{service}_quota_usage",
            metadata,
            Column("project_id", String(64), primary_key=True),
            Column("resource", String(255), primary_key=True),
            Column("in_use", Integer, nullable=False, default=0),
            Column("reserved", Integer, nullable=False, default=0),
        )
        self.reservation = Table(
            f"{service}_quota_reservation",
            metadata,
            Column("id", String(64), primary_key=True),
            Column("batch", String(64), nullable=False, index=True),
            Column("project_id", String(64), nullable=False),
            Column("resource", String(255), nullable=False),
            Column("delta", Integer, nullable=False),
            Column("expires_at", UTCDateTime, nullable=False, index=True),
        )


@dataclass
class Reservation:
    """What one request holds until it commits or rolls back."""

    id: str
    project_id: str
    deltas: dict[str, int] = field(default_factory=dict)


class QuotaEngine:
    """Limits, usage and reservations of one service's resources."""

    def __init__(
        self,
        db: Database,
        tables: QuotaTables,
        defaults: dict[str, int],
        *,
        reservation_ttl: dt.timedelta = dt.timedelta(hours=1),
        limit_source: Callable[[str], Awaitable[dict[str, int]]] | None = None,
    ):
        self.db = db
        # Limits managed elsewhere (identity's unified limits) win over the local table.
        self.limit_source = limit_source
        self.tables = tables
        self.defaults = dict(defaults)
        self.reservation_ttl = reservation_ttl

    async def limits(self, project_id: str) -> dict[str, int]:
        """The project's limits: its own where set, the defaults otherwise."""
        async with self.db.session() as session:
            return await self._limits(session, project_id)

    async def _limits(self, session: AsyncSession, project_id: str) -> dict[str, int]:
        rows = await session.execute(
            select(self.tables.limit.c.resource, self.tables.limit.c.hard_limit).where(
                self.tables.limit.c.project_id == project_id
            )
        )
        limits = {**self.defaults, **{r: int(v) for r, v in rows}}
        if self.limit_source is not None:
            managed = await self.limit_source(project_id)
            limits.update({r: v for r, v in managed.items() if r in self.defaults})
        return limits

    async def set_limits(self, project_id: str, limits: dict[str, int]) -> dict[str, int]:
        """Set some of a project's limits; unknown resources are a ValueError."""
        unknown = set(limits) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown quota resources: {', '.join(sorted(unknown))}")
        table = self.tables.limit
        async with self.db.session() as session:
            for resource, value in limits.items():
                if value < UNLIMITED:
                    raise ValueError(f"quota for {resource} must be -1 (unlimited) or more")
                key = and_(table.c.project_id == project_id, table.c.resource == resource)
                result = await session.execute(update(table).where(key).values(hard_limit=value))
                if affected(result) == 0:
                    await session.execute(
                        insert(table).values(
                            project_id=project_id, resource=resource, hard_limit=value
                        )
                    )
            return await self._limits(session, project_id)

    async def reset_limits(self, project_id: str) -> None:
        """Return the project to the default limits."""
        async with self.db.session() as session:
            await session.execute(
                delete(self.tables.limit).where(self.tables.limit.c.project_id == project_id)
            )

    async def usage(self, project_id: str) -> dict[str, dict[str, int]]:
        """Per resource: limit, in_use and reserved."""
        async with self.db.session() as session:
            limits = await self._limits(session, project_id)
            rows = await session.execute(
                select(
                    self.tables.usage.c.resource,
                    self.tables.usage.c.in_use,
                    self.tables.usage.c.reserved,
                ).where(self.tables.usage.c.project_id == project_id)
            )
            used = {r: (int(i), int(v)) for r, i, v in rows}
        return {
            resource: {
                "limit": limit,
                "in_use": used.get(resource, (0, 0))[0],
                "reserved": used.get(resource, (0, 0))[1],
            }
            for resource, limit in limits.items()
        }

    async def _ensure_usage_rows(self, project_id: str, resources: list[str]) -> None:
        table = self.tables.usage
        # One read for all of them: rows exist after a project's first reservation.
        async with self.db.session() as session:
            present = set(
                (
                    await session.execute(
                        select(table.c.resource).where(
                            table.c.project_id == project_id, table.c.resource.in_(resources)
                        )
                    )
                ).scalars()
            )
        for resource in resources:
            if resource in present:
                continue
            try:
                async with self.db.session() as session:
                    await session.execute(
                        insert(table).values(
                            project_id=project_id, resource=resource, in_use=0, reserved=0
                        )
                    )
            except IntegrityError:
                pass  # a concurrent request created it first

    async def reserve(self, project_id: str, deltas: dict[str, int]) -> Reservation:
        """Hold ``deltas`` for the project, or raise :class:`QuotaExceeded` holding nothing."""
        wanted = {r: d for r, d in deltas.items() if d > 0}
        unknown = set(wanted) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown quota resources: {', '.join(sorted(unknown))}")
        reservation = Reservation(id=new_id(), project_id=project_id, deltas=wanted)
        if not wanted:
            return reservation
        await self._ensure_usage_rows(project_id, sorted(wanted))
        await retry_on_deadlock(lambda: self._reserve(reservation))
        return reservation

    async def _reserve(self, reservation: Reservation) -> None:
        project_id, wanted = reservation.project_id, reservation.deltas
        usage = self.tables.usage
        resources = sorted(wanted)
        try:
            await self._reserve_rows(reservation, resources)
        except _OverLimit as over:
            # Nothing stayed reserved (the transaction rolled back): name what is over.
            async with self.db.session() as session:
                current = await session.execute(
                    select(usage.c.resource, usage.c.in_use + usage.c.reserved).where(
                        usage.c.project_id == project_id, usage.c.resource.in_(resources)
                    )
                )
                held = {resource: int(count) for resource, count in current.all()}
            limited = [r for r in resources if over.limits[r] != UNLIMITED]
            resource = next(
                (r for r in limited if held.get(r, 0) + wanted[r] > over.limits[r]),
                (limited or resources)[0],
            )
            raise QuotaExceeded(
                resource, wanted[resource], held.get(resource, 0), over.limits[resource]
            ) from None

    async def _reserve_rows(self, reservation: Reservation, resources: list[str]) -> None:
        project_id, wanted = reservation.project_id, reservation.deltas
        usage = self.tables.usage
        expires = utcnow() + self.reservation_ttl
        async with self.db.session() as session:
            limits = await self._limits(session, project_id)
            # One guarded UPDATE for every resource (each row its own delta and limit): it
            # changes all the rows or, when one would pass its limit, fewer of them.
            delta = case(wanted, value=usage.c.resource)
            guards = [
                and_(usage.c.resource == resource,
                     usage.c.in_use + usage.c.reserved + wanted[resource] <= limits[resource])
                for resource in resources if limits[resource] != UNLIMITED
            ]  # fmt: skip
            unlimited = [r for r in resources if limits[r] == UNLIMITED]
            if unlimited:
                guards.append(usage.c.resource.in_(unlimited))
            result = await session.execute(
                update(usage)
                .where(usage.c.project_id == project_id, usage.c.resource.in_(resources))
                .where(or_(*guards))
                .values(reserved=usage.c.reserved + delta)
            )
            if affected(result) != len(resources):
                raise _OverLimit(limits)  # rolls this transaction back
            await session.execute(
                insert(self.tables.reservation),
                [
                    {"id": new_id(), "batch": reservation.id, "project_id": project_id,
                     "resource": resource, "delta": wanted[resource], "expires_at": expires}
                    for resource in resources
                ],
            )  # fmt: skip

    @asynccontextmanager
    async def hold(self, project_id: str, deltas: dict[str, int]) -> AsyncIterator[Reservation]:
        """Reserve ``deltas`` for the block: committed when it succeeds, returned if it fails."""
        reservation = await self.reserve(project_id, deltas)
        try:
            yield reservation
        except BaseException:
            await self.rollback(reservation)
            raise
        await self.commit(reservation)

    async def _settle(self, reservation_id: str, *, commit: bool) -> None:
        await retry_on_deadlock(lambda: self._settle_once(reservation_id, commit=commit))

    async def _settle_once(self, reservation_id: str, *, commit: bool) -> None:
        usage = self.tables.usage
        table = self.tables.reservation
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(table).where(table.c.batch == reservation_id).order_by(table.c.resource)
                )
            ).all()
            if not rows:
                return
            # One UPDATE for every resource of the reservation (one project's).
            delta = case({row.resource: row.delta for row in rows}, value=usage.c.resource)
            values: dict[str, Any] = {"reserved": usage.c.reserved - delta}
            if commit:
                values["in_use"] = usage.c.in_use + delta
            await session.execute(
                update(usage)
                .where(
                    usage.c.project_id == rows[0].project_id,
                    usage.c.resource.in_([row.resource for row in rows]),
                )
                .values(**values)
            )
            await session.execute(delete(table).where(table.c.batch == reservation_id))

    async def commit(self, reservation: Reservation) -> None:
        """Turn the reservation into usage."""
        await self._settle(reservation.id, commit=True)

    async def rollback(self, reservation: Reservation) -> None:
        """Give the reservation back."""
        await self._settle(reservation.id, commit=False)

    async def release(self, project_id: str, deltas: dict[str, int]) -> None:
        """Return committed usage (a resource was deleted); never below zero."""
        await retry_on_deadlock(lambda: self._release_once(project_id, deltas))

    async def _release_once(self, project_id: str, deltas: dict[str, int]) -> None:
        usage = self.tables.usage
        async with self.db.session() as session:
            for resource in sorted(deltas):
                delta = deltas[resource]
                if delta <= 0:
                    continue
                key = and_(usage.c.project_id == project_id, usage.c.resource == resource)
                remaining = case((usage.c.in_use >= delta, usage.c.in_use - delta), else_=0)
                await session.execute(update(usage).where(key).values(in_use=remaining))

    async def expire_stale(self) -> int:
        """Roll back reservations whose holder never settled them; returns how many."""
        table = self.tables.reservation
        async with self.db.session() as session:
            batches = (
                await session.execute(
                    select(table.c.batch).where(table.c.expires_at < utcnow()).distinct()
                )
            ).scalars()
            stale = list(batches)
        for batch in stale:
            await self._settle(batch, commit=False)
        return len(stale)
