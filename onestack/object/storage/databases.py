"""Container and account listings: one SQLite database per container and per account.

As in Swift, each replica of a container (or account) is a small SQLite file on
a device, ``<device>/containers/<part>/<suffix>/<hash>/<hash>.db``. Updates
from object servers are appended to a ``.pending`` file beside it (one line,
no database transaction) and merged in one transaction when the listing is
read or the file grows, so a busy container costs an append per write.

Rows carry timestamps and merge newest-wins, which makes replication a matter
of pushing rows: every row has a ROWID that only grows (a replaced row gets a
new one), and each database remembers up to which ROWID each peer has it.

Direct ``sqlite3`` rather than SQLAlchemy: these are thousands of tiny
per-container files opened on demand on storage nodes, not a service database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onestack.object.storage.diskfile import DeviceUnavailable, ensure_dirs

PENDING_MERGE_BYTES = 256 * 1024
ZERO = "0000000000.00000"


class DatabaseMissing(Exception):
    """No database for that container or account on this device."""


@dataclass(frozen=True)
class Kind:
    """What differs between container and account databases."""

    name: str
    rows: str
    create_rows: str
    columns: tuple[str, ...]


CONTAINER = Kind(
    "container",
    "object",
    """CREATE TABLE object (
        ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        etag TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX ix_object_deleted_name ON object (deleted, name);""",
    ("name", "created_at", "size", "content_type", "etag", "deleted"),
)

ACCOUNT = Kind(
    "account",
    "container",
    """CREATE TABLE container (
        ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        put_timestamp TEXT NOT NULL,
        delete_timestamp TEXT NOT NULL,
        object_count INTEGER NOT NULL,
        bytes_used INTEGER NOT NULL,
        stats_timestamp TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX ix_container_deleted_name ON container (deleted, name);""",
    (
        "name",
        "put_timestamp",
        "delete_timestamp",
        "object_count",
        "bytes_used",
        "stats_timestamp",
        "deleted",
    ),
)

INFO_SCHEMA = """
CREATE TABLE info (
    id TEXT NOT NULL,
    account TEXT NOT NULL,
    container TEXT NOT NULL,
    created_at TEXT NOT NULL,
    put_timestamp TEXT NOT NULL,
    delete_timestamp TEXT NOT NULL,
    status_changed_at TEXT NOT NULL,
    item_count INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    reported TEXT NOT NULL DEFAULT '');
CREATE TABLE sync (remote_id TEXT PRIMARY KEY, sync_point INTEGER NOT NULL);
"""


class Broker:
    """One container or account database replica; every method blocks (run it in a thread)."""

    def __init__(self, kind: Kind, db_file: Path, account: str, container: str = ""):
        self.kind = kind
        self.db_file = db_file
        self.pending_file = Path(f"{db_file}.pending")
        self.account = account
        self.container = container
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    # -- connection -----------------------------------------------------------------------

    def exists(self) -> bool:
        return self.db_file.exists()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.db_file.exists():
                raise DatabaseMissing(str(self.db_file))
            conn = sqlite3.connect(
                self.db_file, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.row_factory = sqlite3.Row
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def initialize(self, put_timestamp: str, db_id: str | None = None) -> bool:
        """Create the database file; False when it already existed."""
        with self.lock:
            if self.db_file.exists():
                return False
            tmp = self.db_file.with_name(f".{self.db_file.name}.{uuid.uuid4().hex}")
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.executescript(INFO_SCHEMA + self.kind.create_rows)
                conn.execute(
                    "INSERT INTO info (id, account, container, created_at, put_timestamp, "
                    "delete_timestamp, status_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        db_id or str(uuid.uuid4()),
                        self.account,
                        self.container,
                        put_timestamp,
                        put_timestamp,
                        ZERO,
                        put_timestamp,
                    ),
                )
            finally:
                conn.close()
            try:
                os.link(tmp, self.db_file)
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
            return True

    # -- pending updates ------------------------------------------------------------------

    def put_pending(self, record: dict[str, Any]) -> None:
        """Queue a row update with one append; merged at the next read."""
        if not self.db_file.exists():
            raise DatabaseMissing(str(self.db_file))
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.pending_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.write(fd, line)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > PENDING_MERGE_BYTES:
            self.merge_pending()

    def merge_pending(self) -> None:
        """Fold the queued updates into the database in one transaction."""
        try:
            fd = os.open(self.pending_file, os.O_RDWR)
        except FileNotFoundError:
            return
        with self.lock:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size == 0:
                    return
                raw = os.pread(fd, size, 0)
                records = []
                for line in raw.splitlines():
                    with contextlib.suppress(ValueError):
                        records.append(json.loads(line))
                self.merge_items(records)
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    # -- rows -----------------------------------------------------------------------------

    def merge_items(self, records: list[dict[str, Any]], source: tuple[str, int] | None = None):
        """Apply rows newest-wins; ``source`` (peer id, its max row) records a sync point."""
        with self.transaction() as conn:
            count_delta = bytes_delta = 0
            for record in records:
                old = conn.execute(
                    f"SELECT * FROM {self.kind.rows} WHERE name = ?", (record["name"],)
                ).fetchone()
                merged = self._merge_row(dict(old) if old else None, record)
                if merged is None:
                    continue
                if old is not None:
                    count_delta -= 0 if old["deleted"] else self._row_count(dict(old))
                    bytes_delta -= 0 if old["deleted"] else self._row_bytes(dict(old))
                count_delta += 0 if merged["deleted"] else self._row_count(merged)
                bytes_delta += 0 if merged["deleted"] else self._row_bytes(merged)
                columns = self.kind.columns
                conn.execute(
                    f"INSERT OR REPLACE INTO {self.kind.rows} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    [merged[c] for c in columns],
                )
            if count_delta or bytes_delta:
                conn.execute(
                    "UPDATE info SET item_count = item_count + ?, bytes_used = bytes_used + ?",
                    (count_delta, bytes_delta),
                )
            if source is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO sync (remote_id, sync_point) VALUES (?, ?)",
                    (f"in:{source[0]}", source[1]),
                )

    def _merge_row(self, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
        if self.kind is CONTAINER:
            row = {
                "name": new["name"],
                "created_at": new["created_at"],
                "size": int(new.get("size", 0)),
                "content_type": new.get("content_type", ""),
                "etag": new.get("etag", ""),
                "deleted": int(bool(new.get("deleted", 0))),
            }
            if old is not None and old["created_at"] >= row["created_at"]:
                return None
            return row
        put = max(new.get("put_timestamp", ZERO), old["put_timestamp"] if old else ZERO)
        delete = max(new.get("delete_timestamp", ZERO), old["delete_timestamp"] if old else ZERO)
        stats_new = new.get("stats_timestamp", ZERO)
        if old is not None and old["stats_timestamp"] > stats_new:
            stats = (old["object_count"], old["bytes_used"], old["stats_timestamp"])
        else:
            stats = (int(new.get("object_count", 0)), int(new.get("bytes_used", 0)), stats_new)
        row = {
            "name": new["name"],
            "put_timestamp": put,
            "delete_timestamp": delete,
            "object_count": stats[0],
            "bytes_used": stats[1],
            "stats_timestamp": stats[2],
            "deleted": int(delete > put),
        }
        if old is not None and all(old[k] == row[k] for k in self.kind.columns):
            return None
        return row

    def _row_count(self, row: dict[str, Any]) -> int:
        return 1

    def _row_bytes(self, row: dict[str, Any]) -> int:
        return int(row["size"] if self.kind is CONTAINER else row["bytes_used"])

    def account_totals(self) -> tuple[int, int]:
        """Objects and bytes over an account's live containers."""
        self.merge_pending()
        with self.lock:
            row = (
                self._connect()
                .execute(
                    "SELECT COALESCE(SUM(object_count), 0), COALESCE(SUM(bytes_used), 0) "
                    "FROM container WHERE deleted = 0"
                )
                .fetchone()
            )
        return int(row[0]), int(row[1])

    # -- info and metadata ----------------------------------------------------------------

    def get_info(self) -> dict[str, Any]:
        """The database's stat row (pending updates merged first)."""
        self.merge_pending()
        with self.lock:
            conn = self._connect()
            info = dict(conn.execute("SELECT * FROM info").fetchone())
            info["max_row"] = conn.execute(
                f"SELECT COALESCE(MAX(ROWID), -1) FROM {self.kind.rows}"
            ).fetchone()[0]
        info["metadata"] = json.loads(info["metadata"])
        return info

    def is_deleted(self, info: dict[str, Any]) -> bool:
        return bool(info["delete_timestamp"] > info["put_timestamp"])

    def update_put_timestamp(self, timestamp: str) -> None:
        with self.transaction() as conn:
            info = conn.execute("SELECT put_timestamp, delete_timestamp FROM info").fetchone()
            if timestamp > info["put_timestamp"]:
                was_deleted = info["delete_timestamp"] > info["put_timestamp"]
                conn.execute("UPDATE info SET put_timestamp = ?", (timestamp,))
                if was_deleted and timestamp > info["delete_timestamp"]:
                    conn.execute("UPDATE info SET status_changed_at = ?", (timestamp,))

    def mark_deleted(self, timestamp: str) -> None:
        with self.transaction() as conn:
            info = conn.execute("SELECT delete_timestamp FROM info").fetchone()
            if timestamp > info["delete_timestamp"]:
                conn.execute(
                    "UPDATE info SET delete_timestamp = ?, status_changed_at = ?, metadata = ?",
                    (timestamp, timestamp, self._cleared_metadata(conn, timestamp)),
                )

    def _cleared_metadata(self, conn: sqlite3.Connection, timestamp: str) -> str:
        current = json.loads(conn.execute("SELECT metadata FROM info").fetchone()[0])
        return json.dumps({k: ["", max(ts, timestamp)] for k, (_, ts) in current.items()})

    def update_metadata(self, updates: dict[str, tuple[str, str]]) -> None:
        """Merge ``{header: (value, timestamp)}``; the newer timestamp wins per key."""
        if not updates:
            return
        with self.transaction() as conn:
            current = json.loads(conn.execute("SELECT metadata FROM info").fetchone()[0])
            for key, (value, timestamp) in updates.items():
                if key not in current or current[key][1] < timestamp:
                    current[key] = [value, timestamp]
            conn.execute("UPDATE info SET metadata = ?", (json.dumps(current),))

    def merge_timestamps(self, info: dict[str, Any]) -> None:
        """Take a peer's put/delete timestamps when newer (replication)."""
        with self.transaction() as conn:
            mine = conn.execute(
                "SELECT created_at, put_timestamp, delete_timestamp FROM info"
            ).fetchone()
            conn.execute(
                "UPDATE info SET created_at = ?, put_timestamp = ?, delete_timestamp = ?",
                (
                    min(mine["created_at"], info["created_at"]),
                    max(mine["put_timestamp"], info["put_timestamp"]),
                    max(mine["delete_timestamp"], info["delete_timestamp"]),
                ),
            )

    def set_reported(self, reported: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE info SET reported = ?", (reported,))

    # -- listings -------------------------------------------------------------------------

    def list_rows(
        self,
        *,
        limit: int,
        marker: str = "",
        end_marker: str = "",
        prefix: str = "",
        delimiter: str = "",
        reverse: bool = False,
    ) -> list[dict[str, Any]]:
        """Live rows in name order, with ``{"subdir": ...}`` entries where a delimiter folds."""
        self.merge_pending()
        results: list[dict[str, Any]] = []
        lower, lower_inclusive = marker, False
        upper = end_marker
        if reverse:
            lower, upper = end_marker, marker
        if prefix:
            if not lower or lower < prefix:
                lower, lower_inclusive = prefix, True
            prefix_end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            if not upper or upper > prefix_end:
                upper = prefix_end
        with self.lock:
            conn = self._connect()
            while len(results) < limit:
                clauses = ["deleted = 0"]
                args: list[Any] = []
                if lower:
                    clauses.append("name >= ?" if lower_inclusive else "name > ?")
                    args.append(lower)
                if upper:
                    clauses.append("name < ?")
                    args.append(upper)
                wanted = limit - len(results)
                rows = conn.execute(
                    f"SELECT * FROM {self.kind.rows} WHERE {' AND '.join(clauses)} "
                    f"ORDER BY name {'DESC' if reverse else 'ASC'} LIMIT ?",
                    [*args, wanted],
                ).fetchall()
                if not rows:
                    break
                folded = False
                for row in rows:
                    name = row["name"]
                    if delimiter:
                        end = name.find(delimiter, len(prefix))
                        if end >= 0:
                            subdir = name[: end + len(delimiter)]
                            results.append({"subdir": subdir})
                            if reverse:
                                upper = subdir
                            else:
                                lower = subdir[:-1] + chr(ord(subdir[-1]) + 1)
                                lower_inclusive = True
                            folded = True
                            break
                    results.append(dict(row))
                    if reverse:
                        upper = name
                    else:
                        lower, lower_inclusive = name, False
                if not folded and len(rows) < wanted:
                    break
        return results[:limit]

    # -- replication ----------------------------------------------------------------------

    def rows_since(self, row_id: int, count: int) -> list[dict[str, Any]]:
        self.merge_pending()
        with self.lock:
            rows = (
                self._connect()
                .execute(
                    f"SELECT ROWID AS row_id, * FROM {self.kind.rows} WHERE ROWID > ? "
                    "ORDER BY ROWID LIMIT ?",
                    (row_id, count),
                )
                .fetchall()
            )
        return [dict(r) for r in rows]

    def sync_point(self, remote_id: str, incoming: bool) -> int:
        key = f"{'in' if incoming else 'out'}:{remote_id}"
        with self.lock:
            row = (
                self._connect()
                .execute("SELECT sync_point FROM sync WHERE remote_id = ?", (key,))
                .fetchone()
            )
        return int(row[0]) if row else -1

    def set_sync_point(self, remote_id: str, point: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO sync (remote_id, sync_point) VALUES (?, ?)",
                (f"out:{remote_id}", point),
            )


class BrokerCache:
    """Open brokers by file, least recently used closed first (bounded open files)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._brokers: OrderedDict[Path, Broker] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, kind: Kind, db_file: Path, account: str, container: str = "") -> Broker:
        with self._lock:
            broker = self._brokers.get(db_file)
            if broker is not None:
                self._brokers.move_to_end(db_file)
                return broker
            broker = Broker(kind, db_file, account, container)
            self._brokers[db_file] = broker
            while len(self._brokers) > self.size:
                _, old = self._brokers.popitem(last=False)
                old.close()
            return broker

    def forget(self, db_file: Path) -> None:
        with self._lock:
            broker = self._brokers.pop(db_file, None)
        if broker is not None:
            broker.close()

    def close(self) -> None:
        with self._lock:
            brokers = list(self._brokers.values())
            self._brokers.clear()
        for broker in brokers:
            broker.close()


def db_path(devices_dir: Path, device: str, kind: Kind, part: int, name_hash: str) -> Path:
    return (
        devices_dir
        / device
        / f"{kind.name}s"
        / str(part)
        / name_hash[-3:]
        / name_hash
        / f"{name_hash}.db"
    )


def ensure_db_dir(devices_dir: Path, device: str, kind: Kind, part: int, name_hash: str) -> Path:
    """Create the directories of a new database replica (never the device root)."""
    path, _ = ensure_dirs(
        devices_dir / device, f"{kind.name}s", str(part), name_hash[-3:], name_hash
    )
    return path


def db_partitions(devices_dir: Path, device: str, kind: Kind) -> list[int]:
    try:
        names = os.listdir(devices_dir / device / f"{kind.name}s")
    except FileNotFoundError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def iter_dbs(devices_dir: Path, device: str, kind: Kind, part: int) -> Iterator[Path]:
    """Database files of one partition on one device."""
    part_dir = devices_dir / device / f"{kind.name}s" / str(part)
    with contextlib.suppress(FileNotFoundError):
        for suffix in os.listdir(part_dir):
            with contextlib.suppress(FileNotFoundError):
                for name_hash in os.listdir(part_dir / suffix):
                    db_file = part_dir / suffix / name_hash / f"{name_hash}.db"
                    if db_file.exists():
                        yield db_file


__all__ = [
    "ACCOUNT",
    "CONTAINER",
    "Broker",
    "BrokerCache",
    "DatabaseMissing",
    "DeviceUnavailable",
    "db_partitions",
    "db_path",
    "ensure_db_dir",
    "iter_dbs",
]
