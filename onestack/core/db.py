"""Database access: one async SQLAlchemy engine per service, Alembic migrations.

Every service owns a declarative ``Base`` and a ``migrations/`` package of
Alembic revisions; :func:`sync_schema` brings a database to the head revision.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import DateTime, String, TypeDecorator, event, text
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, Result, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

T = TypeVar("T")


def affected(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (its result is a cursor result)."""
    return cast(CursorResult[Any], result).rowcount


def new_id() -> str:
    """A new resource id: 32 hex digits, as OpenStack services use."""
    return uuid.uuid4().hex


def utcnow() -> dt.datetime:
    """Now, in UTC, timezone-aware."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A DateTime stored naive in UTC and read back timezone-aware on every backend."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        # MySQL/MariaDB drop sub-second precision unless asked; ordering of events needs it.
        if dialect.name == "mysql":
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return value.replace(tzinfo=dt.UTC) if value is not None else None


def id_column_type() -> String:
    """The column type of resource ids (text, 64 wide for foreign ids)."""
    return String(64)


class Database:
    """An engine and session factory for one service's database."""

    def __init__(self, url: str, migrations: Path | None = None):
        self.url = url
        self.migrations = migrations
        parsed = make_url(url)
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
            # Each aiosqlite connection is a thread with its own page cache: keep few.
            kwargs["pool_size"] = 4
            kwargs["max_overflow"] = 4
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def sync_schema(self) -> None:
        """Create the database if missing and upgrade it to the newest revision."""
        if self.migrations is None:
            return
        await create_database_if_missing(self.url)
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade, self.migrations)

    async def close(self) -> None:
        """Release every pooled connection."""
        await self.engine.dispose()


DEADLOCK_CODES = ("1213", "40P01", "40001", "database is locked")
MAX_RETRY_DELAY = 0.5


def is_deadlock(exc: BaseException) -> bool:
    """Whether a database error is a deadlock or serialization failure worth retrying."""
    if not isinstance(exc, DBAPIError):
        return False
    text_of = str(exc.orig)
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in DEADLOCK_CODES or any(marker in text_of for marker in DEADLOCK_CODES)


async def retry_on_deadlock(
    work: Callable[[], Awaitable[T]], attempts: int = 14, base_delay: float = 0.01
) -> T:
    """Run a transaction, retrying it (with jittered backoff) when the database aborts it as a
    deadlock victim; InnoDB and PostgreSQL do that as a matter of course under contention, and
    SQLite when a read transaction must become a writer after another write committed (its
    busy timeout does not wait then), which on a loaded machine can repeat for seconds."""
    for attempt in range(attempts):
        try:
            return await work()
        except DBAPIError as exc:
            if not is_deadlock(exc) or attempt == attempts - 1:
                raise
            delay = min(base_delay * (2**attempt), MAX_RETRY_DELAY)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def version_table(migrations: Path) -> str:
    """Each service records its revision in its own table, so services can share a database."""
    return f"alembic_version_{migrations.parent.name}"


def _upgrade(conn: Connection, migrations: Path) -> None:
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations))
    script = ScriptDirectory.from_config(config)
    context = MigrationContext.configure(conn, opts={"version_table": version_table(migrations)})
    if context.get_current_revision() == script.get_current_head():
        return

    def upgrade(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs("head", rev)

    with EnvironmentContext(config, script, fn=upgrade, destination_rev="head") as env:
        env.configure(connection=conn, version_table=version_table(migrations))
        with env.begin_transaction():
            env.run_migrations()


async def create_database_if_missing(url: str) -> None:
    """Create a PostgreSQL or MariaDB database named in ``url`` when it does not exist."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" or not parsed.database:
        return
    admin_db = "postgres" if backend == "postgresql" else None
    admin_url = URL.create(
        parsed.drivername,
        username=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=admin_db,
        query=parsed.query,
    )
    engine = create_async_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")

    try:
        async with engine.connect() as conn:
            if backend == "postgresql":
                found = await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
                )
                if not found:
                    await conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
            else:
                await conn.execute(
                    text(
                        f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` "
                        "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
                )
    finally:
        await engine.dispose()


def run_alembic_env(target_metadata: Any) -> None:
    """Body of a service's ``migrations/env.py``, for authoring revisions with ``alembic``.

    Run from the service's migrations directory, e.g.
    ``alembic -x url=sqlite:///tmp.db -c /dev/null revision --autogenerate``.
    """
    from alembic import context
    from sqlalchemy import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite://")
    script_location = Path(context.config.get_main_option("script_location") or ".")
    with create_engine(url).connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=True,
            version_table=version_table(script_location),
        )
        with context.begin_transaction():
            context.run_migrations()
