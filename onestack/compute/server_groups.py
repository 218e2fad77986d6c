"""Server groups as the server create path and the scheduler use them: the request's group
with its members and their hosts, and adding or dropping a member."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.compute.models import Instance
from onestack.compute.models_admin import ServerGroup, ServerGroupMember
from onestack.compute.scheduler.state import ServerGroupInfo


class ServerGroupFull(Exception):
    """The group already has as many members as its project's quota allows."""


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


async def group_info(session: AsyncSession, group_uuid: str) -> ServerGroupInfo | None:
    """The scheduler's view of a group: policy, rules, members and the hosts they are on."""
    group = await find_group(session, group_uuid)
    if group is None:
        return None
    members = await members_of(session, group.id)
    hosts: set[str] = set()
    if members:
        query = select(Instance.host).where(
            Instance.uuid.in_(members), Instance.host.is_not(None), Instance.deleted.is_(False)
        )
        hosts = {host for host in (await session.execute(query)).scalars() if host}
    return ServerGroupInfo(
        uuid=group.uuid,
        policy=group.policy,
        members=set(members),
        hosts=hosts,
        max_server_per_host=(group.rules or {}).get("max_server_per_host"),
    )


async def add_members(
    session: AsyncSession, group_uuid: str, instance_uuids: list[str], limit: int
) -> None:
    """Put servers in a group; ``ServerGroupFull`` when that would pass ``limit`` members
    (-1: unlimited), ``LookupError`` when the group does not exist."""
    group = await find_group(session, group_uuid)
    if group is None:
        raise LookupError(group_uuid)
    if limit >= 0:
        count = (
            await session.execute(
                select(func.count(ServerGroupMember.id)).where(
                    ServerGroupMember.group_id == group.id
                )
            )
        ).scalar_one()
        if count + len(instance_uuids) > limit:
            raise ServerGroupFull(group_uuid)
    for instance_uuid in instance_uuids:
        session.add(ServerGroupMember(group_id=group.id, instance_uuid=instance_uuid))
    try:
        await session.flush()
    except IntegrityError:
        raise ValueError("a server is in at most one server group") from None


async def remove_member(session: AsyncSession, instance_uuid: str) -> None:
    """Take a (deleted) server out of its group."""
    await session.execute(
        delete(ServerGroupMember).where(ServerGroupMember.instance_uuid == instance_uuid)
    )
