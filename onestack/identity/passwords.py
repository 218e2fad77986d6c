"""Password hashing with argon2id, run off the event loop (it is slow on purpose)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from onestack.core.config import IdentitySettings


class Passwords:
    """Hashes and verifies passwords and secrets without blocking the event loop.

    Hashing runs on its own pool, one thread per core: more threads cannot go
    faster, and each concurrent hash holds ``argon2_memory_kib`` of memory.
    """

    def __init__(self, settings: IdentitySettings):
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="hash")
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )

    async def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    def close(self) -> None:
        """Stop the hashing threads."""
        self._pool.shutdown(wait=False)

    async def hash(self, secret: str) -> str:
        """The argon2id hash of ``secret``."""
        hashed: str = await self._run(self._hasher.hash, secret)
        return hashed

    async def verify(self, stored: str | None, secret: str) -> bool:
        """Whether ``secret`` matches ``stored``; a missing hash never matches."""
        if not stored:
            # Spend the same time as a real check so timing does not reveal the account.
            await self._run(self._hasher.hash, secret)
            return False
        try:
            return bool(await self._run(self._hasher.verify, stored, secret))
        except (VerificationError, InvalidHashError):
            return False
