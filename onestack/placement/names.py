"""Resource class and trait names ↔ their row ids, cached in process.

Both tables are small and almost never change: the standard names (from os-resource-classes
and os-traits) are written at start-up, custom ones by admins. Ids are only ever added or
deleted, never renamed in place, so a cached entry is either right or names something gone;
a miss re-reads the table, which also picks up what other processes added.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from onestack.core.db import Database, utcnow
from onestack.placement.models import ResourceClass, Trait


class NameTable:
    """The names of one table (resource classes or traits) and their ids."""

    def __init__(self, db: Database, model: type[ResourceClass] | type[Trait], standard: list[str]):
        self.db = db
        self.model = model
        self.standard = frozenset(standard)
        self._standard_order = list(standard)
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}

    async def reload(self) -> None:
        """Read every name from the database."""
        async with self.db.session() as session:
            rows = (await session.execute(select(self.model.name, self.model.id))).all()
        self._ids = {name: ident for name, ident in rows}
        self._names = {ident: name for name, ident in rows}

    async def sync_standard(self) -> None:
        """Add the standard names the database lacks (several processes may race: fine)."""
        await self.reload()
        # In the libraries' order, so the standard classes list as upstream lists them.
        missing = [name for name in self._standard_order if name not in self._ids]
        if missing:
            now = utcnow()
            rows = [{"name": name, "created_at": now, "updated_at": now} for name in missing]
            try:
                async with self.db.session() as session:
                    await session.execute(insert(self.model), rows)
            except IntegrityError:
                pass  # another process inserted them first
            await self.reload()

    async def ids(self, names: Iterable[str]) -> tuple[dict[str, int], list[str]]:
        """Ids of ``names``, and the names that do not exist (sorted)."""
        wanted = set(names)
        if not wanted <= self._ids.keys():
            await self.reload()
        found = {name: self._ids[name] for name in wanted if name in self._ids}
        return found, sorted(wanted - found.keys())

    async def name_of(self, ident: int) -> str:
        """The name of row ``ident``."""
        if ident not in self._names:
            await self.reload()
        return self._names[ident]

    async def names_of(self, idents: Iterable[int]) -> dict[int, str]:
        """Names of several rows."""
        wanted = set(idents)
        if not wanted <= self._names.keys():
            await self.reload()
        return {ident: self._names[ident] for ident in wanted if ident in self._names}

    def remember(self, name: str, ident: int) -> None:
        """Record a row this process created."""
        self._ids[name] = ident
        self._names[ident] = name

    def forget(self, name: str) -> None:
        """Drop a row this process deleted."""
        ident = self._ids.pop(name, None)
        if ident is not None:
            self._names.pop(ident, None)
