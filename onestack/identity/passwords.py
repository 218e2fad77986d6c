"""Password hashing with argon2id, run off the event loop (it is slow on purpose)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from onestack.core.config import IdentitySettings


class Passwords:
    """Hashes and verifies passwords and secrets without blocking the event loop."""

    def __init__(self, settings: IdentitySettings):
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )

    async def hash(self, secret: str) -> str:
        """The argon2id hash of ``secret``."""
        return await asyncio.to_thread(self._hasher.hash, secret)

    async def verify(self, stored: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``stored``; a missing hash never matches."""
        if not stored:
            # Spend the same time as a real check so timing does not reveal the account.
            await asyncio.to_thread(self._hasher.hash, secret)
            return False
        try:
            return await asyncio.to_thread(self._hasher.verify, stored, secret)
        except (VerificationError, InvalidHashError):
            return False
