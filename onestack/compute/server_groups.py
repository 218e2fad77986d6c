"""Reading server groups: a group by uuid and its current members."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.compute.models import Instance
from onestack.compute.models_admin import ServerGroup, ServerGroupMember


async def find_group(session: AsyncSession, group_uuid: str) -> ServerGroup | None:
    """The group with that uuid, if any."""
    query = select(ServerGroup).where(ServerGroup.uuid == group_uuid)
    return (await session.execute(query)).scalar_one_or_none()


async def members_of(session: AsyncSession, group_id: int) -> list[str]:
    """Uuids of the group's servers that are not deleted, in the order they joined."""
    query = (
        select(ServerGroupMember.instance_uuid)
        .join(Instance, Instance.uuid == ServerGroupMember.instance_uuid, isouter=True)
        .where(ServerGroupMember.group_id == group_id)
        .where((Instance.deleted.is_(False)) | (Instance.id.is_(None)))
        .order_by(ServerGroupMember.id)
    )
    return list((await session.execute(query)).scalars())
