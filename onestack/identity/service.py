"""The identity service of one process: database, keys, hashing, tokens, policy."""

from __future__ import annotations

from pathlib import Path

from onestack.core.auth.policy import PolicyEngine
from onestack.core.bus.base import Bus, Consumer
from onestack.core.config import Settings
from onestack.core.db import Database
from onestack.core.identity_events import IDENTITY_EVENTS
from onestack.identity.fernet import KeyRepository, SecretBox, TokenFormatter
from onestack.identity.passwords import Passwords
from onestack.identity.policies import RULES
from onestack.identity.tokens import TokenProvider

MIGRATIONS = Path(__file__).parent / "migrations"
EVENTS_TOPIC = IDENTITY_EVENTS


class IdentityService:
    """Everything identity's API handlers need, built once per process."""

    def __init__(self, settings: Settings, bus: Bus | None = None):
        self.settings = settings
        self.bus = bus
        self.db = Database(settings.database_url("identity"), MIGRATIONS)
        self.keys = KeyRepository(settings.key_repository(), settings.identity.max_active_keys)
        self.credential_keys = KeyRepository(settings.credential_key_repository())
        self.secrets = SecretBox(self.credential_keys)
        self.passwords = Passwords(settings.identity)
        self.tokens = TokenProvider(
            settings.identity, self.db, TokenFormatter(self.keys), self.passwords
        )
        self.policy = PolicyEngine(
            RULES,
            overrides=settings.policy.overrides,
            policy_file=settings.data_dir / "identity-policy.yaml",
            enforce_scope=settings.policy.enforce_scope,
        )
        self._consumer: Consumer | None = None

    async def start(self) -> None:
        """Migrate the database, make sure keys exist, and listen for other processes' changes."""
        await self.db.sync_schema()
        self.keys.setup()
        self.credential_keys.setup()
        if self.bus is not None:
            self._consumer = await self.bus.consume(EVENTS_TOPIC, _EventHandler(self), fanout=True)
            bus = self.bus

            async def announce() -> None:
                await bus.fanout(EVENTS_TOPIC, "changed")

            self.tokens.announce = announce

    async def stop(self) -> None:
        """Stop listening and close the database."""
        if self._consumer is not None:
            await self._consumer.stop()
        self.passwords.close()
        await self.db.close()


class _EventHandler:
    def __init__(self, service: IdentityService):
        self._service = service

    async def changed(self) -> None:
        """Another identity process wrote: drop cached scopes, roles and catalog."""
        self._service.tokens.invalidate()
