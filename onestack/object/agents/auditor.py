"""The auditor: re-reads every object, checks each block's CRC and the whole MD5 against the
ETag, and quarantines corrupt copies (the replicator then restores a good one). Databases get
SQLite's ``quick_check``. Reads are paced so the disks keep serving clients."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

from onestack.object.agents.base import Agent
from onestack.object.storage.databases import ACCOUNT, CONTAINER, db_partitions, iter_dbs
from onestack.object.storage.diskfile import DiskError, DiskReader, ensure_dirs

log = logging.getLogger(__name__)


class Auditor(Agent):
    """Finds and quarantines corrupt object and database replicas."""

    name = "auditor"

    def __init__(self, *args: object, bytes_per_second: float = 50 * 1024 * 1024) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.bytes_per_second = bytes_per_second

    async def run_once(self) -> dict[str, int]:
        stats = {"objects": 0, "bytes": 0, "quarantined": 0, "databases": 0}
        disk = self.node.objects.disk
        started = time.monotonic()
        for dev in self.local_devices(self.cluster.rings.object):
            entries = await self.cluster.run(lambda d=dev.device: list(disk.iter_objects(d)))
            for part, name_hash in entries:
                try:
                    opened = await self.cluster.run(disk.open, dev.device, part, name_hash)
                except DiskError:
                    stats["quarantined"] += 1
                    continue
                if not isinstance(opened, DiskReader):
                    continue
                stats["objects"] += 1
                stats["bytes"] += opened.size
                good = await self.cluster.run(opened.verify)
                await self.cluster.run(opened.close)
                if not good:
                    log.warning("quarantined corrupt object %s on %s", name_hash, dev.device)
                    stats["quarantined"] += 1
                ahead = stats["bytes"] / self.bytes_per_second - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        for kind in (CONTAINER, ACCOUNT):
            for dev in self.local_devices(self.cluster.rings[kind.name]):
                parts = await self.cluster.run(
                    db_partitions, self.node.devices_dir, dev.device, kind
                )
                for part in parts:
                    files = await self.cluster.run(
                        lambda d=dev.device, p=part, k=kind: list(
                            iter_dbs(self.node.devices_dir, d, k, p)
                        )
                    )
                    for db_file in files:
                        stats["databases"] += 1
                        if not await self.cluster.run(_database_ok, db_file):
                            self.node.brokers.forget(db_file)
                            await self.cluster.run(
                                _quarantine_db,
                                self.node.devices_dir / dev.device,
                                kind.name,
                                db_file,
                            )
                            stats["quarantined"] += 1
        return stats


def _database_ok(db_file: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False


def _quarantine_db(device_root: Path, kind: str, db_file: Path) -> None:
    try:
        target_dir, _ = ensure_dirs(device_root, "quarantined", f"{kind}s")
    except DiskError:
        return
    target = target_dir / db_file.parent.name
    if target.exists():
        target = target_dir / f"{db_file.parent.name}-{uuid.uuid4().hex[:8]}"
    if db_file.parent.exists():
        os.rename(db_file.parent, target)
    shutil.rmtree(db_file.parent, ignore_errors=True)
