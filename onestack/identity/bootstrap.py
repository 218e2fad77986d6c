"""First-start bootstrap: default domain, roles, admin and service accounts, region, catalog.

Idempotent: every start re-runs it, creating what is missing and bringing the
endpoints of onestack's own services in step with where they now listen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.core.db import utcnow
from onestack.identity.models import (
    Assignment,
    Domain,
    Endpoint,
    ImpliedRole,
    Project,
    Region,
    Role,
    Service,
    User,
)
from onestack.identity.roles import SYSTEM_TARGET
from onestack.identity.service import IdentityService

DEFAULT_DOMAIN_ID = "default"
ROLE_CHAIN = ("admin", "member", "reader")
SERVICE_ROLE = "service"
INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True)
class CatalogEntry:
    """One service to list in the catalog: its type, name and URL."""

    type: str
    name: str
    url: str


@dataclass(frozen=True)
class BootstrapResult:
    admin_user_id: str
    admin_project_id: str
    service_user_id: str


async def _role(session: AsyncSession, name: str) -> Role:
    role = await session.scalar(select(Role).where(Role.name == name, Role.domain_id == ""))
    if role is None:
        role = Role(name=name, domain_id="", options={"immutable": True})
        session.add(role)
        await session.flush()
    return role


async def _grant(session: AsyncSession, kind: str, actor: str, target: str, role: Role) -> None:
    key = (kind, actor, target, role.id, False)
    if await session.get(Assignment, key) is None:
        session.add(
            Assignment(
                type=kind, actor_id=actor, target_id=target, role_id=role.id, inherited=False
            )
        )


async def _project(session: AsyncSession, name: str) -> Project:
    project = await session.scalar(
        select(Project).where(Project.name == name, Project.domain_id == DEFAULT_DOMAIN_ID)
    )
    if project is None:
        project = Project(
            name=name, domain_id=DEFAULT_DOMAIN_ID, description=f"Bootstrap {name} project"
        )
        session.add(project)
        await session.flush()
    return project


async def _user(
    identity: IdentityService, session: AsyncSession, name: str, password: str, project: Project
) -> User:
    user = await session.scalar(
        select(User).where(User.name == name, User.domain_id == DEFAULT_DOMAIN_ID)
    )
    if user is None:
        user = User(
            name=name,
            domain_id=DEFAULT_DOMAIN_ID,
            password_hash=await identity.passwords.hash(password),
            password_created_at=utcnow(),
            default_project_id=project.id,
        )
        session.add(user)
        await session.flush()
    elif not await identity.passwords.verify(user.password_hash, password):
        # The operator asked for this password: make it so, as keystone-manage bootstrap does.
        user.password_hash = await identity.passwords.hash(password)
        user.password_created_at = utcnow()
        user.enabled = True
    return user


async def _sync_catalog(session: AsyncSession, region: str, entries: list[CatalogEntry]) -> None:
    for entry in entries:
        service = await session.scalar(
            select(Service).where(Service.type == entry.type, Service.name == entry.name)
        )
        if service is None:
            service = Service(
                type=entry.type, name=entry.name, description=f"onestack {entry.name}"
            )
            session.add(service)
            await session.flush()
        existing = {
            e.interface: e
            for e in (
                await session.execute(select(Endpoint).where(Endpoint.service_id == service.id))
            ).scalars()
        }
        for interface in INTERFACES:
            endpoint = existing.get(interface)
            if endpoint is None:
                session.add(
                    Endpoint(
                        service_id=service.id, interface=interface, region_id=region, url=entry.url
                    )
                )
            elif endpoint.url != entry.url:
                endpoint.url = entry.url


async def bootstrap(
    identity: IdentityService,
    *,
    admin_password: str,
    service_password: str,
    catalog: list[CatalogEntry],
) -> BootstrapResult:
    """Create or refresh everything a new cloud needs to be used."""
    region = identity.settings.identity.region
    async with identity.db.session() as session:
        if await session.get(Domain, DEFAULT_DOMAIN_ID) is None:
            session.add(
                Domain(id=DEFAULT_DOMAIN_ID, name="Default", description="The default domain")
            )
            await session.flush()
        chain = [await _role(session, name) for name in ROLE_CHAIN]
        service_role = await _role(session, SERVICE_ROLE)
        for prior, implied in itertools.pairwise(chain):
            if await session.get(ImpliedRole, (prior.id, implied.id)) is None:
                session.add(ImpliedRole(prior_role_id=prior.id, implied_role_id=implied.id))
        admin_role = chain[0]
        admin_project = await _project(session, "admin")
        service_project = await _project(session, "service")
        admin = await _user(identity, session, "admin", admin_password, admin_project)
        service_user = await _user(
            identity, session, identity.settings.service_user, service_password, service_project
        )
        await _grant(session, "UserProject", admin.id, admin_project.id, admin_role)
        await _grant(session, "UserSystem", admin.id, SYSTEM_TARGET, admin_role)
        await _grant(session, "UserProject", service_user.id, service_project.id, admin_role)
        await _grant(session, "UserProject", service_user.id, service_project.id, service_role)
        if await session.get(Region, region) is None:
            session.add(Region(id=region, description=""))
            await session.flush()
        await _sync_catalog(session, region, catalog)
        await identity.tokens.changed(session)
        result = BootstrapResult(admin.id, admin_project.id, service_user.id)
    await identity.tokens.after_change()
    return result
