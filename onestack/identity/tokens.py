"""Token issue, validation and revocation.

Tokens are Fernet payloads (who, which scope, until when); everything else a
token says — names, roles, catalog — is looked up on validation, through a
per-process cache that is dropped whenever the identity ``generation`` counter
moves. Every write bumps that counter in the database and announces it on the
bus, so other identity processes drop their caches at once (and within
``STALE_AFTER`` seconds even if the announcement is missed).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.core.asgi.errors import Forbidden, NotFound, Unauthorized
from onestack.core.auth.context import TokenData
from onestack.core.config import IdentitySettings
from onestack.core.db import Database
from onestack.identity import roles as role_logic
from onestack.identity.catalog import load_catalog
from onestack.identity.fernet import TokenFormatter, TokenPayload
from onestack.identity.models import (
    ApplicationCredential,
    Domain,
    Generation,
    Project,
    RevocationEvent,
    User,
)
from onestack.identity.passwords import Passwords
from onestack.identity.schemas import Auth, ProjectScope, Ref, UserRef

log = logging.getLogger(__name__)

STALE_AFTER = 1.0
AUTH_FAILED = "The request you have made requires authentication."


def new_audit_id() -> str:
    """A 22-character URL-safe audit id, as Keystone issues."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def to_datetime(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


@dataclass(frozen=True)
class Revocation:
    user_id: str | None
    project_id: str | None
    domain_id: str | None
    audit_id: str | None
    app_cred_id: str | None
    issued_before: float

    def matches(self, payload: TokenPayload, user_domain_id: str) -> bool:
        """Whether this event revokes a token with ``payload``."""
        if payload.issued_at > self.issued_before:
            return False
        return (
            (self.user_id is None or self.user_id == payload.user_id)
            and (self.project_id is None or self.project_id == payload.project_id)
            and (self.domain_id is None or self.domain_id in (payload.domain_id, user_domain_id))
            and (self.audit_id is None or self.audit_id in payload.audit_ids)
            and (self.app_cred_id is None or self.app_cred_id == payload.app_cred_id)
        )


class TokenProvider:
    """Issues, validates and revokes tokens for one identity process."""

    def __init__(
        self,
        settings: IdentitySettings,
        db: Database,
        formatter: TokenFormatter,
        passwords: Passwords,
    ):
        self.settings = settings
        self.db = db
        self.formatter = formatter
        self.passwords = passwords
        self.generation = -1
        self._checked_at = 0.0
        self._scopes: dict[tuple[str, str | None, str | None, bool, str | None], TokenData] = {}
        self._revocations: list[Revocation] = []
        self._catalog: list[dict[str, Any]] | None = None
        self.announce: Callable[[], Awaitable[None]] | None = None

    # -- cache coherence -------------------------------------------------

    def invalidate(self) -> None:
        """Forget everything cached; the next request reloads from the database."""
        self._scopes.clear()
        self._catalog = None
        self._checked_at = 0.0
        self.generation = -1

    async def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < STALE_AFTER and self.generation >= 0:
            return
        async with self.db.session() as session:
            current = await session.scalar(select(Generation.value).where(Generation.id == 1))
            current = current or 0
            if current != self.generation:
                self._scopes.clear()
                self._catalog = None
                rows = (await session.execute(select(RevocationEvent))).scalars()
                self._revocations = [
                    Revocation(
                        r.user_id,
                        r.project_id,
                        r.domain_id,
                        r.audit_id,
                        r.app_cred_id,
                        r.issued_before.timestamp(),
                    )
                    for r in rows
                ]
                self.generation = current
        self._checked_at = now
        self.formatter.reload_if_rotated()

    async def changed(self, session: AsyncSession) -> None:
        """Record, inside the writing transaction, that identity data changed."""
        row = await session.get(Generation, 1)
        if row is None:
            session.add(Generation(id=1, value=1))
        else:
            row.value += 1

    async def after_change(self) -> None:
        """Drop this process's caches and tell the other identity processes to do the same."""
        self.invalidate()
        if self.announce is not None:
            try:
                await self.announce()
            except Exception:
                log.warning("could not announce an identity change on the bus", exc_info=True)

    async def catalog(self) -> list[dict[str, Any]]:
        """The unsubstituted catalog, cached per generation."""
        await self._refresh()
        catalog = self._catalog
        if catalog is None:
            # A concurrent refresh may clear the cache while this one loads: answer
            # with what was loaded, never with the cleared attribute.
            async with self.db.session() as session:
                catalog = await load_catalog(session)
            self._catalog = catalog
        return catalog

    # -- validation ------------------------------------------------------

    async def validate(self, token: str, *, allow_expired: bool = False) -> TokenData:
        """What ``token`` establishes; 401 when it is invalid, expired or revoked (404 if asked)."""
        payload = self.formatter.read(token)
        now = time.time()
        if payload.expires_at <= now:
            if not allow_expired:
                raise Unauthorized(AUTH_FAILED)
            if payload.expires_at + self.settings.allow_expired_window <= now:
                raise NotFound("Could not find token.")
        await self._refresh()
        data = await self._scope_data(payload)
        if any(r.matches(payload, data.user_domain_id) for r in self._revocations):
            raise Unauthorized(AUTH_FAILED)
        return replace(
            data,
            methods=payload.methods,
            expires_at=to_datetime(payload.expires_at),
            issued_at=to_datetime(payload.issued_at),
            audit_ids=payload.audit_ids,
        )

    async def _scope_data(self, payload: TokenPayload) -> TokenData:
        key = (
            payload.user_id,
            payload.project_id,
            payload.domain_id,
            payload.system,
            payload.app_cred_id,
        )
        cached = self._scopes.get(key)
        if cached is not None:
            return cached
        async with self.db.session() as session:
            data = await self._load_scope(session, payload)
        self._scopes[key] = data
        return data

    async def _load_scope(self, session: AsyncSession, payload: TokenPayload) -> TokenData:
        user = await session.get(User, payload.user_id)
        if user is None or not user.enabled:
            raise Unauthorized(AUTH_FAILED)
        user_domain = await session.get(Domain, user.domain_id)
        if user_domain is None or not user_domain.enabled:
            raise Unauthorized(AUTH_FAILED)
        data = TokenData(
            user_id=user.id,
            user_name=user.name,
            user_domain_id=user_domain.id,
            user_domain_name=user_domain.name,
            methods=[],
            expires_at=to_datetime(0),
            issued_at=to_datetime(0),
            audit_ids=[],
            app_cred_id=payload.app_cred_id,
        )
        roles: list[Any] = []
        if payload.project_id:
            project = await session.get(Project, payload.project_id)
            if project is None or not project.enabled:
                raise Unauthorized(AUTH_FAILED)
            project_domain = await session.get(Domain, project.domain_id)
            if project_domain is None or not project_domain.enabled:
                raise Unauthorized(AUTH_FAILED)
            data.project_id = project.id
            data.project_name = project.name
            data.project_domain_id = project_domain.id
            data.project_domain_name = project_domain.name
            roles = await role_logic.effective_roles(session, user.id, project=project)
        elif payload.domain_id:
            domain = await session.get(Domain, payload.domain_id)
            if domain is None or not domain.enabled:
                raise Unauthorized(AUTH_FAILED)
            data.domain_id = domain.id
            data.domain_name = domain.name
            roles = await role_logic.effective_roles(session, user.id, domain_id=domain.id)
        elif payload.system:
            data.system = True
            roles = await role_logic.effective_roles(session, user.id, system=True)
        if payload.app_cred_id:
            roles = await self._app_cred_roles(session, payload.app_cred_id, roles)
        scoped = bool(payload.project_id or payload.domain_id or payload.system)
        if scoped and not roles:
            raise Unauthorized(AUTH_FAILED)
        data.roles = [{"id": r.id, "name": r.name} for r in roles]
        return data

    async def _app_cred_roles(
        self, session: AsyncSession, app_cred_id: str, roles: list[Any]
    ) -> list[Any]:
        app_cred = await session.get(ApplicationCredential, app_cred_id)
        if app_cred is None:
            raise Unauthorized(AUTH_FAILED)
        if app_cred.expires_at is not None and app_cred.expires_at <= dt.datetime.now(dt.UTC):
            raise Unauthorized(AUTH_FAILED)
        allowed = set(app_cred.role_ids)
        # A role the user lost since the credential was made is not delegated any more.
        return [r for r in roles if r.id in allowed]

    # -- issue -----------------------------------------------------------

    async def issue(self, auth: Auth) -> tuple[str, TokenData]:
        """Authenticate with ``auth``'s methods and return a token for its scope."""
        identity = auth.identity
        methods = list(dict.fromkeys(identity.methods))
        expires_at = time.time() + self.settings.token_expiration
        audit_ids = [new_audit_id()]
        app_cred_id = None
        async with self.db.session() as session:
            if "password" in methods:
                if identity.password is None:
                    raise Unauthorized(AUTH_FAILED)
                user = await self._password_user(session, identity.password.user)
            elif "application_credential" in methods:
                if identity.application_credential is None:
                    raise Unauthorized(AUTH_FAILED)
                user, app_cred = await self._app_cred_user(session, identity.application_credential)
                app_cred_id = app_cred.id
                if app_cred.expires_at is not None:
                    expires_at = min(expires_at, app_cred.expires_at.timestamp())
            elif "token" in methods:
                if identity.token is None:
                    raise Unauthorized(AUTH_FAILED)
                original = await self.validate(identity.token.id)
                if original.app_cred_id:
                    raise Forbidden("Application credential tokens cannot be rescoped.")
                found = await session.get(User, original.user_id)
                if found is None:
                    raise Unauthorized(AUTH_FAILED)
                user = found
                expires_at = original.expires_at.timestamp()
                audit_ids = [new_audit_id(), original.audit_ids[-1]]
                methods = list(dict.fromkeys([*original.methods, *methods]))
            else:
                raise Unauthorized(f"Unsupported authentication method: {', '.join(methods)}.")
            if not user.enabled:
                raise Unauthorized(AUTH_FAILED)
            project_id, domain_id, system = await self._resolve_scope(session, auth, user)
            if app_cred_id is not None:
                delegated = await session.get(ApplicationCredential, app_cred_id)
                if delegated is None:
                    raise Unauthorized(AUTH_FAILED)
                if domain_id or system or (project_id and project_id != delegated.project_id):
                    raise Unauthorized("Application credentials are scoped to their own project.")
                project_id = delegated.project_id
        payload = TokenPayload(
            user_id=user.id,
            methods=methods,
            issued_at=time.time(),
            expires_at=expires_at,
            audit_ids=audit_ids,
            project_id=project_id,
            domain_id=domain_id,
            system=system,
            app_cred_id=app_cred_id,
        )
        token = self.formatter.create(payload)
        return token, await self.validate(token)

    async def issue_for_user(
        self, user_id: str, project_id: str | None, method: str
    ) -> tuple[str, TokenData]:
        """A token for a user who proved who they are otherwise (an EC2 signature)."""
        async with self.db.session() as session:
            user = await session.get(User, user_id)
            if user is None or not user.enabled:
                raise Unauthorized(AUTH_FAILED)
            if project_id is not None:
                project = await session.get(Project, project_id)
                if project is None or not project.enabled:
                    raise Unauthorized(AUTH_FAILED)
        now = time.time()
        payload = TokenPayload(
            user_id=user_id,
            methods=[method],
            issued_at=now,
            expires_at=now + self.settings.token_expiration,
            audit_ids=[new_audit_id()],
            project_id=project_id,
            domain_id=None,
            system=False,
            app_cred_id=None,
        )
        token = self.formatter.create(payload)
        return token, await self.validate(token)

    async def _find_domain(self, session: AsyncSession, ref: Ref) -> Domain | None:
        if ref.id:
            return await session.get(Domain, ref.id)
        return await session.scalar(select(Domain).where(Domain.name == ref.name))

    async def _find_user(self, session: AsyncSession, ref: UserRef) -> User | None:
        if ref.id:
            return await session.get(User, ref.id)
        if ref.domain is None:
            return None
        domain = await self._find_domain(session, ref.domain)
        if domain is None:
            return None
        return await session.scalar(
            select(User).where(User.name == ref.name, User.domain_id == domain.id)
        )

    async def _password_user(self, session: AsyncSession, ref: UserRef) -> User:
        user = await self._find_user(session, ref)
        stored = user.password_hash if user is not None else None
        if not await self.passwords.verify(stored, ref.password or "") or user is None:
            raise Unauthorized(AUTH_FAILED)
        domain = await session.get(Domain, user.domain_id)
        if domain is None or not domain.enabled:
            raise Unauthorized(AUTH_FAILED)
        return user

    async def _app_cred_user(
        self, session: AsyncSession, method: Any
    ) -> tuple[User, ApplicationCredential]:
        app_cred: ApplicationCredential | None = None
        if method.id:
            app_cred = await session.get(ApplicationCredential, method.id)
        elif method.user is not None:
            owner = await self._find_user(session, method.user)
            if owner is not None:
                app_cred = await session.scalar(
                    select(ApplicationCredential).where(
                        ApplicationCredential.user_id == owner.id,
                        ApplicationCredential.name == method.name,
                    )
                )
        stored = app_cred.secret_hash if app_cred is not None else None
        if not await self.passwords.verify(stored, method.secret) or app_cred is None:
            raise Unauthorized(AUTH_FAILED)
        if app_cred.expires_at is not None and app_cred.expires_at <= dt.datetime.now(dt.UTC):
            raise Unauthorized(AUTH_FAILED)
        user = await session.get(User, app_cred.user_id)
        if user is None:
            raise Unauthorized(AUTH_FAILED)
        return user, app_cred

    async def _resolve_scope(
        self, session: AsyncSession, auth: Auth, user: User
    ) -> tuple[str | None, str | None, bool]:
        scope = auth.scope
        if scope == "unscoped":
            return None, None, False
        if scope is None:
            if auth.identity.application_credential is not None:
                return None, None, False
            return await self._default_project(session, user), None, False
        if scope.project is not None:
            project = await self._find_project(session, scope.project)
            if project is None or not project.enabled:
                raise Unauthorized(f"User {user.id} has no access to the requested project.")
            return project.id, None, False
        if scope.domain is not None:
            domain = await self._find_domain(session, scope.domain)
            if domain is None or not domain.enabled:
                raise Unauthorized(f"User {user.id} has no access to the requested domain.")
            return None, domain.id, False
        if scope.system is not None:
            if not scope.system.get("all"):
                raise Unauthorized("Only the 'all' system scope exists.")
            return None, None, True
        return None, None, False

    async def _find_project(self, session: AsyncSession, ref: ProjectScope) -> Project | None:
        if ref.id:
            return await session.get(Project, ref.id)
        if ref.domain is None:
            return None
        domain = await self._find_domain(session, ref.domain)
        if domain is None:
            return None
        return await session.scalar(
            select(Project).where(Project.name == ref.name, Project.domain_id == domain.id)
        )

    async def _default_project(self, session: AsyncSession, user: User) -> str | None:
        if not user.default_project_id:
            return None
        project = await session.get(Project, user.default_project_id)
        if project is None or not project.enabled:
            return None
        granted = await role_logic.effective_role_ids(session, user.id, project=project)
        return project.id if granted else None

    # -- revocation ------------------------------------------------------

    async def revoke(
        self,
        session: AsyncSession,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
        domain_id: str | None = None,
        audit_id: str | None = None,
        app_cred_id: str | None = None,
    ) -> None:
        """Record a revocation event inside the caller's transaction."""
        session.add(
            RevocationEvent(
                user_id=user_id,
                project_id=project_id,
                domain_id=domain_id,
                audit_id=audit_id,
                app_cred_id=app_cred_id,
                issued_before=dt.datetime.now(dt.UTC),
            )
        )
        await self.changed(session)
