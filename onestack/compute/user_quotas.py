"""Per-user compute quotas within a project's (Nova's DbQuotaDriver ``?user_id=``).

A user's limit of a resource is its own row, else the project's. The limits the users of
a project are given add up to at most the project's limit. What a user uses is counted
from the rows it owns (servers and their vCPUs and RAM, key pairs, server groups), as
Nova counts; per-server resources (metadata items, group members) are the project's.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.compute.models import Base, Instance, KeyPair
from onestack.compute.models_admin import ServerGroup
from onestack.core.db import Database, affected
from onestack.core.quota import UNLIMITED, QuotaExceeded

USER_LIMIT = Table(
    "compute_quota_user_limit",
    Base.metadata,
    Column("project_id", String(64), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("resource", String(255), primary_key=True),
    Column("hard_limit", Integer, nullable=False),
)
# The resources whose use is counted per user.
COUNTED = ("instances", "cores", "ram", "key_pairs", "server_groups")


class UserQuotas:
    """Limits and usage of one user within a project."""

    def __init__(self, db: Database):
        self.db = db

    async def own_limits(
        self, session: AsyncSession, project_id: str, user_id: str
    ) -> dict[str, int]:
        """The limits set for this user (not those inherited from the project)."""
        rows = await session.execute(
            select(USER_LIMIT.c.resource, USER_LIMIT.c.hard_limit).where(
                USER_LIMIT.c.project_id == project_id, USER_LIMIT.c.user_id == user_id
            )
        )
        return {resource: int(limit) for resource, limit in rows}

    async def limits(
        self, project_id: str, user_id: str, project_limits: dict[str, int]
    ) -> dict[str, int]:
        """The user's limits: its own where set, the project's otherwise."""
        async with self.db.session() as session:
            return {**project_limits, **await self.own_limits(session, project_id, user_id)}

    async def usage(self, session: AsyncSession, project_id: str, user_id: str) -> dict[str, int]:
        """What the user's rows hold now."""
        live = and_(
            Instance.project_id == project_id,
            Instance.user_id == user_id,
            Instance.deleted.is_(False),
        )
        count, cores, ram = (
            await session.execute(
                select(
                    func.count(Instance.id),
                    func.coalesce(func.sum(Instance.vcpus), 0),
                    func.coalesce(func.sum(Instance.memory_mb), 0),
                ).where(live)
            )
        ).one()
        keys = await session.scalar(
            select(func.count(KeyPair.id)).where(KeyPair.user_id == user_id)
        )
        groups = await session.scalar(
            select(func.count(ServerGroup.id)).where(
                ServerGroup.project_id == project_id, ServerGroup.user_id == user_id
            )
        )
        return {"instances": int(count), "cores": int(cores), "ram": int(ram),
                "key_pairs": int(keys or 0), "server_groups": int(groups or 0)}  # fmt: skip

    async def settable(
        self, project_id: str, user_id: str, project_limits: dict[str, int]
    ) -> dict[str, tuple[int, int]]:
        """Per resource, the (minimum, maximum) a new limit of the user may take: at least
        what it uses, at most what the project's limit leaves beside its other users'
        limits (-1: no maximum)."""
        async with self.db.session() as session:
            used = await self.usage(session, project_id, user_id)
            others = dict(
                (
                    await session.execute(
                        select(USER_LIMIT.c.resource, func.sum(USER_LIMIT.c.hard_limit))
                        .where(
                            USER_LIMIT.c.project_id == project_id,
                            USER_LIMIT.c.user_id != user_id,
                            USER_LIMIT.c.hard_limit != UNLIMITED,
                        )
                        .group_by(USER_LIMIT.c.resource)
                    )
                ).all()
            )
        return {
            resource: (
                used.get(resource, 0),
                limit if limit == UNLIMITED else max(0, limit - int(others.get(resource) or 0)),
            )
            for resource, limit in project_limits.items()
        }

    async def set_limits(self, project_id: str, user_id: str, limits: dict[str, int]) -> None:
        async with self.db.session() as session:
            for resource, value in limits.items():
                key = and_(
                    USER_LIMIT.c.project_id == project_id,
                    USER_LIMIT.c.user_id == user_id,
                    USER_LIMIT.c.resource == resource,
                )
                changed = await session.execute(
                    update(USER_LIMIT).where(key).values(hard_limit=value)
                )
                if affected(changed) == 0:
                    await session.execute(insert(USER_LIMIT).values(
                        project_id=project_id, user_id=user_id, resource=resource,
                        hard_limit=value))  # fmt: skip

    async def reset(self, project_id: str, user_id: str) -> None:
        """Back to the project's limits."""
        async with self.db.session() as session:
            await session.execute(
                delete(USER_LIMIT).where(
                    USER_LIMIT.c.project_id == project_id, USER_LIMIT.c.user_id == user_id
                )
            )

    async def check(self, project_id: str, user_id: str, deltas: dict[str, int]) -> None:
        """QuotaExceeded when ``deltas`` more would pass a limit set for this user."""
        async with self.db.session() as session:
            own = await self.own_limits(session, project_id, user_id)
            wanted = {r: d for r, d in deltas.items() if r in own and own[r] != UNLIMITED}
            if not wanted:
                return
            used = await self.usage(session, project_id, user_id)
        for resource, delta in wanted.items():
            if used.get(resource, 0) + delta > own[resource]:
                raise QuotaExceeded(resource, delta, used.get(resource, 0), own[resource])
