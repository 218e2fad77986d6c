"""Effective roles: direct, group and inherited grants, expanded through implied roles."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.identity.models import Assignment, GroupMembership, ImpliedRole, Project, Role

SYSTEM_TARGET = "system"


async def group_ids(session: AsyncSession, user_id: str) -> list[str]:
    """Ids of the groups ``user_id`` belongs to."""
    rows = await session.execute(
        select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)
    )
    return list(rows.scalars())


async def project_ancestors(session: AsyncSession, project: Project) -> list[str]:
    """Ids of the parents of ``project``, nearest first."""
    ancestors: list[str] = []
    parent_id = project.parent_id
    while parent_id and parent_id not in ancestors:
        ancestors.append(parent_id)
        parent_id = await session.scalar(select(Project.parent_id).where(Project.id == parent_id))
    return ancestors


async def expand_implied(session: AsyncSession, role_ids: set[str]) -> list[Role]:
    """The roles ``role_ids`` name plus every role they imply, transitively."""
    seen = set(role_ids)
    frontier = set(role_ids)
    while frontier:
        rows = await session.execute(
            select(ImpliedRole.implied_role_id).where(ImpliedRole.prior_role_id.in_(frontier))
        )
        frontier = set(rows.scalars()) - seen
        seen |= frontier
    if not seen:
        return []
    # Domain-specific roles never reach tokens themselves, only the roles they imply.
    roles = await session.execute(
        select(Role).where(Role.id.in_(seen), Role.domain_id == "").order_by(Role.name)
    )
    return list(roles.scalars())


async def effective_role_ids(
    session: AsyncSession,
    user_id: str,
    *,
    project: Project | None = None,
    domain_id: str | None = None,
    system: bool = False,
) -> set[str]:
    """Ids of the roles a user holds on one scope, directly or via groups, before implication."""
    actors = [user_id, *await group_ids(session, user_id)]
    clauses = []
    if project is not None:
        clauses.append(and_(Assignment.target_id == project.id, Assignment.inherited.is_(False)))
        inherited_targets = [project.domain_id, *await project_ancestors(session, project)]
        clauses.append(
            and_(Assignment.target_id.in_(inherited_targets), Assignment.inherited.is_(True))
        )
    elif domain_id is not None:
        clauses.append(and_(Assignment.target_id == domain_id, Assignment.inherited.is_(False)))
    elif system:
        clauses.append(Assignment.target_id == SYSTEM_TARGET)
    else:
        return set()
    rows = await session.execute(
        select(Assignment.role_id).where(Assignment.actor_id.in_(actors), or_(*clauses))
    )
    return set(rows.scalars())


async def effective_roles(
    session: AsyncSession,
    user_id: str,
    *,
    project: Project | None = None,
    domain_id: str | None = None,
    system: bool = False,
) -> list[Role]:
    """The roles a user holds on one scope, implied roles included."""
    direct = await effective_role_ids(
        session, user_id, project=project, domain_id=domain_id, system=system
    )
    return await expand_implied(session, direct)


async def granted_target_ids(session: AsyncSession, user_id: str, *, projects: bool) -> set[str]:
    """Projects (or, with ``projects=False``, domains) a user holds some role on.

    Inherited domain grants reach every project of the domain, and inherited
    project grants reach the project's subtree.
    """
    actors = [user_id, *await group_ids(session, user_id)]
    kinds = ("UserProject", "GroupProject", "UserDomain", "GroupDomain")
    rows = await session.execute(
        select(Assignment.target_id, Assignment.type, Assignment.inherited).where(
            Assignment.actor_id.in_(actors), Assignment.type.in_(kinds)
        )
    )
    direct: set[str] = set()
    inherited_domains: set[str] = set()
    inherited_projects: set[str] = set()
    for target_id, kind, inherited in rows:
        on_domain = kind.endswith("Domain")
        if projects and on_domain and inherited:
            inherited_domains.add(target_id)
        elif projects and not on_domain:
            direct.add(target_id)
            if inherited:
                inherited_projects.add(target_id)
        elif not projects and on_domain and not inherited:
            direct.add(target_id)
    if inherited_domains:
        found = await session.execute(
            select(Project.id).where(Project.domain_id.in_(inherited_domains))
        )
        direct |= set(found.scalars())
    frontier = inherited_projects
    while frontier:
        children = await session.execute(select(Project.id).where(Project.parent_id.in_(frontier)))
        frontier = set(children.scalars()) - direct
        direct |= frontier
    return direct


async def has_system_grant(session: AsyncSession, user_id: str) -> bool:
    """Whether the user (or one of its groups) holds a role on the system."""
    actors = [user_id, *await group_ids(session, user_id)]
    found = await session.scalar(
        select(Assignment.role_id).where(
            Assignment.actor_id.in_(actors), Assignment.target_id == SYSTEM_TARGET
        )
    )
    return found is not None
