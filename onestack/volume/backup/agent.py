"""The backup agent of one host (Cinder's backup service): consumes ``backup.<host>``.

Creating a backup: the volume's agent exports the volume to this host; the
agent reads it chunk by chunk (holes of sparse files are skipped without
reading), hashes, compresses and stores each chunk an incremental's parent does
not already hold, then the metadata object. Restoring reads the metadata, fetches
and checks every chunk, and replaces the target volume's data only once all of it
has been written. Outcomes and progress go to ``volume-reports``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from pathlib import Path
from typing import Any

from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.heartbeat import PeriodicTask
from onestack.volume.backup import device
from onestack.volume.backup.chunks import (
    BackupMetadata,
    ChunkRecord,
    chunk_name,
    digest,
    metadata_name,
    pack,
    unpack,
    zero_digest,
)
from onestack.volume.backup.objects import ObjectStore, ObjectStoreError
from onestack.volume.drivers.base import GIB
from onestack.volume.rpc import AgentClient, ReportClient, backup_topic

log = logging.getLogger(__name__)

IN_FLIGHT = 4
PROGRESS_STEP = 10


class BackupError(Exception):
    """A backup or restore could not be completed; the message says why."""


def _is_hole(fd: int, offset: int, length: int) -> bool:
    """Whether ``[offset, offset + length)`` of a sparse file holds no data at all."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError as exc:
        # ENXIO: no data at or after offset.
        return exc.errno == errno.ENXIO


class BackupAgent:
    """Backs volumes up into object storage and restores them; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        host: str | None = None,
        client: ServiceClient | None = None,
    ):
        self.settings = settings
        self.config = settings.volume
        self.bus = bus
        self.host = host or settings.volume.host or socket.gethostname()
        self.client = client
        self.reports = ReportClient(bus)
        self.agents = AgentClient(bus)
        self.scratch = settings.data_dir / "volume-scratch"
        self._consumer: Consumer | None = None
        self._heartbeat = PeriodicTask(
            f"backup-agent-{self.host}", self.config.report_interval, self.report
        )

    async def start(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        await self.report()
        self._consumer = await self.bus.consume(backup_topic(self.host), self)
        self._heartbeat.start()

    async def stop(self) -> None:
        await self._heartbeat.stop()
        if self._consumer is not None:
            await self._consumer.stop()

    async def report(self) -> None:
        """Heartbeat (``cinder-backup`` in ``volume service list``)."""
        await self.reports.report(
            "backup_report", host=self.host, availability_zone=self.config.default_availability_zone
        )

    def _store(self) -> ObjectStore:
        if self.client is None:
            raise BackupError("this backup agent cannot reach object storage")
        return ObjectStore(self.client)

    async def _connect(
        self, volume: dict[str, Any], snapshot: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Have the volume's agent export the volume, or one of its snapshots, to this host."""
        connector = {"host": self.host, "purpose": "backup"}
        if snapshot is None:
            connection = await self.agents.call(
                volume["host"], "initialize_connection", volume=volume, connector=connector
            )
        else:
            connection = await self.agents.call(
                volume["host"],
                "initialize_snapshot_connection",
                snapshot=snapshot,
                connector=connector,
            )
        return connection, connector

    async def _disconnect(
        self,
        volume: dict[str, Any],
        connector: dict[str, Any],
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        try:
            if snapshot is None:
                await self.agents.call(
                    volume["host"], "terminate_connection", volume=volume, connector=connector
                )
            else:
                await self.agents.call(
                    volume["host"],
                    "terminate_snapshot_connection",
                    snapshot=snapshot,
                    connector=connector,
                )
        except Exception:
            log.exception("volume %s: the backup export could not be ended", volume["id"])

    # Create ---------------------------------------------------------------------------

    async def create_backup(
        self,
        chain: list[dict[str, Any]],
        volume: dict[str, Any],
        volume_meta: dict[str, Any] | None = None,
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        """Back ``volume`` (or its ``snapshot``) up as ``chain[-1]`` (an incremental of
        ``chain[-2]`` if any); ``volume_meta`` is kept in the metadata object for restores."""
        backup = chain[-1]
        written: list[str] = []
        try:
            store = self._store()
            await store.ensure_container(backup["container"])
            parent = None
            if len(chain) > 1:
                parent_prefix = chain[-2]["object_prefix"]
                raw = await store.get(chain[-2]["container"], metadata_name(parent_prefix))
                parent = BackupMetadata.from_bytes(raw)
            # A snapshot holds the volume's data at its own size.
            source = {**volume, "size": snapshot["size"]} if snapshot else volume
            connection, connector = await self._connect(volume, snapshot)
            try:
                async with device.readable(connection, self.scratch) as path:
                    metadata = await self._send(store, backup, source, path, parent, written)
            finally:
                await self._disconnect(volume, connector, snapshot)
            metadata.volume_meta = volume_meta or {}
            await store.put(
                backup["container"], metadata_name(backup["object_prefix"]), metadata.to_bytes()
            )
        except Exception as exc:
            log.warning("backup %s failed: %s", backup["id"], exc)
            await self._remove(backup["container"], written)
            await self.reports.report(
                "backup_create_failed", backup_id=backup["id"], reason=_why(exc)
            )
            return
        sent = sum(
            1 for c in metadata.chunks if c.object and c.object.startswith(backup["object_prefix"])
        )
        await self.reports.report(
            "backup_created",
            backup_id=backup["id"],
            object_count=len(written) + 1,
            container=backup["container"],
            object_prefix=backup["object_prefix"],
            changed_chunks=sent,
        )

    async def _send(
        self,
        store: ObjectStore,
        backup: dict[str, Any],
        volume: dict[str, Any],
        path: Path,
        parent: BackupMetadata | None,
        written: list[str],
    ) -> BackupMetadata:
        size = int(volume["size"]) * GIB
        chunk_size = parent.chunk_size if parent else self.config.backup_chunk_size
        compression = self.config.backup_compression
        count = (size + chunk_size - 1) // chunk_size
        inherited = {c.index: c for c in parent.chunks} if parent else {}
        records: list[ChunkRecord | None] = [None] * count
        gate = asyncio.Semaphore(IN_FLIGHT)
        done = 0
        reported = 0
        fd = os.open(path, os.O_RDONLY)

        async def one(index: int) -> None:
            nonlocal done, reported
            async with gate:
                offset = index * chunk_size
                length = min(chunk_size, size - offset)
                data = await asyncio.to_thread(_read, fd, offset, length)
                hashed = (
                    await asyncio.to_thread(digest, data)
                    if data is not None
                    else zero_digest(length)
                )
                previous = inherited.get(index)
                if data is None or hashed == zero_digest(length):
                    records[index] = ChunkRecord(index, hashed, length, None, compression)
                elif previous is not None and previous.sha256 == hashed:
                    records[index] = previous
                else:
                    name = chunk_name(backup["object_prefix"], index)
                    packed = await asyncio.to_thread(pack, data, compression)
                    await store.put(backup["container"], name, packed)
                    written.append(name)
                    records[index] = ChunkRecord(index, hashed, length, name, compression)
            done += 1
            progress = done * 100 // count
            if progress - reported >= PROGRESS_STEP:
                reported = progress
                await self.reports.report(
                    "backup_progress", backup_id=backup["id"], progress=progress
                )

        try:
            await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            os.close(fd)
        return BackupMetadata(
            backup_id=backup["id"],
            volume_id=volume["id"],
            size_bytes=size,
            chunk_size=chunk_size,
            parent_id=backup.get("parent_id"),
            chunks=[r for r in records if r is not None],
        )

    async def _remove(self, container: str, names: list[str]) -> None:
        if not names or self.client is None:
            return
        store = self._store()
        for name in names:
            try:
                await store.delete(container, name)
            except ObjectStoreError:
                log.warning("backup object %s could not be removed", name)

    # Restore --------------------------------------------------------------------------

    async def restore_backup(self, chain: list[dict[str, Any]], volume: dict[str, Any]) -> None:
        """Write backup ``chain[-1]`` into ``volume`` (which is at least as large)."""
        backup = chain[-1]
        try:
            store = self._store()
            raw = await store.get(backup["container"], metadata_name(backup["object_prefix"]))
            metadata = BackupMetadata.from_bytes(raw)
            connection, connector = await self._connect(volume)
            try:
                size = int(volume["size"]) * GIB
                async with device.writable(connection, size, self.scratch) as path:
                    await self._receive(store, backup, metadata, path)
            finally:
                await self._disconnect(volume, connector)
        except Exception as exc:
            log.warning("restore of backup %s failed: %s", backup["id"], exc)
            await self.reports.report(
                "backup_restore_failed",
                backup_id=backup["id"],
                volume_id=volume["id"],
                reason=_why(exc),
            )
            return
        await self.reports.report(
            "backup_restored",
            backup_id=backup["id"],
            volume_id=volume["id"],
            volume_meta=metadata.volume_meta,
        )

    async def _receive(
        self, store: ObjectStore, backup: dict[str, Any], metadata: BackupMetadata, path: Path
    ) -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        fd = os.open(path, os.O_WRONLY)
        wanted = [c for c in metadata.chunks if c.object]
        done = 0
        reported = 0

        async def one(record: ChunkRecord) -> None:
            nonlocal done, reported
            async with gate:
                assert record.object is not None
                packed = await store.get(backup["container"], record.object)
                data = await asyncio.to_thread(unpack, packed, record.compression)
                if (
                    len(data) != record.length
                    or await asyncio.to_thread(digest, data) != record.sha256
                ):
                    raise BackupError(f"chunk {record.index} of backup {backup['id']} is corrupt")
                await asyncio.to_thread(os.pwrite, fd, data, record.index * metadata.chunk_size)
            done += 1
            progress = done * 100 // max(len(wanted), 1)
            if progress - reported >= PROGRESS_STEP:
                reported = progress
                await self.reports.report(
                    "backup_progress", backup_id=backup["id"], progress=progress
                )

        try:
            await asyncio.gather(*(one(r) for r in wanted))
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    # Delete ---------------------------------------------------------------------------

    async def delete_backup(self, backup: dict[str, Any]) -> None:
        """Remove the objects this backup wrote (parents' objects stay theirs)."""
        try:
            store = self._store()
            prefix = backup["object_prefix"]
            if prefix and backup.get("container"):
                try:
                    raw = await store.get(backup["container"], metadata_name(prefix))
                except ObjectStoreError:
                    raw = None
                if raw is not None:
                    own = [c.object for c in BackupMetadata.from_bytes(raw).chunks
                           if c.object and c.object.startswith(prefix)]  # fmt: skip
                    for name in own:
                        await store.delete(backup["container"], name)
                    await store.delete(backup["container"], metadata_name(prefix))
        except Exception as exc:
            await self.reports.report(
                "backup_delete_failed", backup_id=backup["id"], reason=_why(exc)
            )
            return
        await self.reports.report("backup_deleted", backup_id=backup["id"])


def _read(fd: int, offset: int, length: int) -> bytes | None:
    """A chunk's bytes, or None when it lies in a hole of the sparse file."""
    if _is_hole(fd, offset, length):
        return None
    data = os.pread(fd, length, offset)
    if len(data) < length:
        data += bytes(length - len(data))
    return data


def _why(exc: Exception) -> str:
    return str(exc) if str(exc) else type(exc).__name__
