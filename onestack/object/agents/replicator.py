"""Replicators: push what a peer lacks, so every primary ends up with every write.

Objects: per partition, compare suffix hashes with each other primary, list the
differing suffixes on both sides, and push newer data files, tombstones and
metadata (with their original timestamps). A peer whose device is gone (507) or
that cannot be reached is replaced by a handoff, so three copies exist again.
A partition held on a handoff is pushed to all primaries and then removed.

Databases: push rows newer than the peer's sync point in batches, with the
database's timestamps and metadata; a missing peer database is created.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from onestack.object.agents.base import Agent
from onestack.object.ring import Device, Ring
from onestack.object.storage.backend import BackendResponse
from onestack.object.storage.databases import (
    ACCOUNT,
    CONTAINER,
    Broker,
    Kind,
    db_partitions,
    iter_dbs,
)
from onestack.object.storage.db_server import DatabaseServer
from onestack.object.storage.diskfile import (
    CRC_KEY,
    DiskError,
    DiskReader,
    ObjectDisk,
    read_trailer,
)

log = logging.getLogger(__name__)
ROWS_PER_REQUEST = 1000


class ObjectReplicator(Agent):
    """Keeps object partitions in step across their primaries."""

    name = "object-replicator"

    @property
    def ring(self) -> Ring:
        return self.cluster.rings.object

    @property
    def disk(self) -> ObjectDisk:
        return self.node.objects.disk

    async def run_once(self) -> dict[str, int]:
        stats = {
            "partitions": 0,
            "pushed": 0,
            "failures": 0,
            "handoffs_removed": 0,
            "stale_tmp_removed": 0,
        }
        for dev in self.local_devices(self.ring):
            stats["stale_tmp_removed"] += await self.cluster.run(self.disk.clean_tmp, dev.device)
            for part in await self.cluster.run(self.disk.partitions, dev.device):
                stats["partitions"] += 1
                try:
                    await self.replicate_partition(dev, part, stats)
                except DiskError as exc:
                    log.warning("replicating %s/%d failed: %s", dev.device, part, exc)
                    stats["failures"] += 1
        return stats

    async def replicate_partition(self, dev: Device, part: int, stats: dict[str, int]) -> None:
        ring = self.ring
        primaries = ring.get_part_nodes(part)
        is_primary = any(p.id == dev.id for p in primaries)
        peers = [p for p in primaries if p.id != dev.id]
        handoffs = (h for h in ring.get_more_nodes(part) if h.id != dev.id)
        synced_all = True
        for peer in peers:
            target: Device | None = peer
            while target is not None:
                ok = await self.sync(dev, part, target, stats)
                if ok:
                    break
                if not is_primary:
                    synced_all = False
                    break
                target = next(handoffs, None)
            if target is None:
                synced_all = False
        if not is_primary and synced_all and peers:
            await self.cluster.run(self.disk.remove_partition, dev.device, part)
            stats["handoffs_removed"] += 1

    async def _replicate_call(self, peer: Device, part: int, body: dict[str, Any]) -> Any:
        response = await self.cluster.backend(peer).request(
            "REPLICATE", peer.device, part, ("", "", ""), {}, json.dumps(body).encode()
        )
        if not response.ok:
            await response.close()
            return None
        return json.loads(await response.read())

    async def sync(self, dev: Device, part: int, peer: Device, stats: dict[str, int]) -> bool:
        """Push ``dev``'s copy of ``part`` to ``peer``; False when the peer cannot take it."""
        local = await self.cluster.run(self.disk.suffix_hashes, dev.device, part)
        remote = await self._replicate_call(peer, part, {"op": "hashes"})
        if remote is None:
            stats["failures"] += 1
            return False
        differing = [s for s, h in local.items() if remote.get(s) != h]
        if not differing:
            return True
        remote = await self._replicate_call(peer, part, {"op": "hashes", "recalculate": differing})
        if remote is None:
            return False
        differing = [s for s in differing if remote.get(s) != local.get(s)]
        if not differing:
            return True
        theirs = await self._replicate_call(peer, part, {"op": "contents", "suffixes": differing})
        if theirs is None:
            return False
        mine = await self.cluster.run(self.disk.suffix_contents, dev.device, part, differing)
        for name_hash, state in mine.items():
            other = theirs.get(name_hash, {})
            their_time = max(other.get("data", ""), other.get("ts", ""))
            my_time = max(state.get("data", ""), state.get("ts", ""))
            if my_time > their_time:
                ok = await self._push(dev, part, peer, name_hash, state)
            elif state.get("meta", "") > other.get("meta", "") and my_time == their_time:
                ok = await self._push_meta(dev, part, peer, name_hash, state["meta"])
            else:
                continue
            stats["pushed" if ok else "failures"] += 1
            if not ok:
                return False
        return True

    async def _push(
        self, dev: Device, part: int, peer: Device, name_hash: str, state: dict[str, str]
    ) -> bool:
        backend = self.cluster.backend(peer)
        if "ts" in state:
            metadata = await self.cluster.run(
                self.disk.read_marker, dev.device, part, name_hash, f"{state['ts']}.ts"
            )
            path = _path_of(metadata)
            response = await backend.request(
                "DELETE",
                peer.device,
                part,
                path,
                {"x-timestamp": state["ts"], "x-backend-replication": "1"},
            )
            await response.close()
            return response.ok or response.status in (404, 409)
        opened = await self.cluster.run(self.disk.open, dev.device, part, name_hash)
        if not isinstance(opened, DiskReader):
            return True
        reader = opened
        metadata = {k: v for k, v in reader.metadata.items() if k not in (CRC_KEY,)}
        meta_time = metadata.pop("x-meta-timestamp", None)
        data_metadata = await self.cluster.run(self._data_metadata, reader)
        headers = {
            "x-timestamp": reader.timestamp,
            "x-backend-replication": "1",
            "x-backend-metadata": json.dumps(data_metadata),
            "content-length": str(reader.size),
        }
        response = await backend.request(
            "PUT", peer.device, part, _path_of(metadata), headers, self._stream(reader)
        )
        await response.close()
        ok = response.ok or response.status == 409
        if ok and meta_time:
            ok = await self._push_meta(dev, part, peer, name_hash, meta_time)
        return ok

    def _data_metadata(self, reader: DiskReader) -> dict[str, Any]:
        """The data file's own metadata (without a later POST's)."""

        path = self.disk.hash_dir(reader.device, reader.part, reader.name_hash)
        data_file = path / f"{reader.timestamp}.data"
        fd = os.open(data_file, os.O_RDONLY)
        try:
            metadata, _ = read_trailer(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return {k: v for k, v in metadata.items() if k != CRC_KEY}

    async def _stream(self, reader: DiskReader) -> AsyncIterator[bytes]:
        blocks = reader.read_range(0, reader.size)
        try:
            while True:
                piece = await self.cluster.run(next, blocks, None)
                if piece is None:
                    return
                yield piece
        finally:
            await self.cluster.run(reader.close)

    async def _push_meta(
        self, dev: Device, part: int, peer: Device, name_hash: str, meta_time: str
    ) -> bool:
        metadata = await self.cluster.run(
            self.disk.read_marker, dev.device, part, name_hash, f"{meta_time}.meta"
        )
        opened = await self.cluster.run(self.disk.open, dev.device, part, name_hash)
        if not isinstance(opened, DiskReader):
            return True
        path = _path_of(opened.metadata)
        await self.cluster.run(opened.close)
        response = await self.cluster.backend(peer).request(
            "POST",
            peer.device,
            part,
            path,
            {
                "x-timestamp": meta_time,
                "x-backend-replication": "1",
                "x-backend-metadata": json.dumps(metadata),
            },
        )
        await response.close()
        return response.ok or response.status in (404, 409)


def _path_of(metadata: dict[str, Any]) -> tuple[str, str, str]:
    account, container, obj = metadata["name"].lstrip("/").split("/", 2)
    return account, container, obj


class DatabaseReplicator(Agent):
    """Keeps container (or account) database replicas in step."""

    kind: Kind = CONTAINER

    def __init__(self, *args: Any, kind: Kind = CONTAINER) -> None:
        super().__init__(*args)
        self.kind = kind
        self.name = f"{kind.name}-replicator"

    @property
    def server(self) -> DatabaseServer:
        return self.node.containers if self.kind is CONTAINER else self.node.accounts

    async def run_once(self) -> dict[str, int]:
        stats = {"databases": 0, "rows": 0, "failures": 0, "handoffs_removed": 0}
        ring = self.cluster.rings[self.kind.name]
        for dev in self.local_devices(ring):
            parts = await self.cluster.run(
                db_partitions, self.node.devices_dir, dev.device, self.kind
            )
            for part in parts:
                files = await self.cluster.run(
                    lambda d=dev.device, p=part: list(
                        iter_dbs(self.node.devices_dir, d, self.kind, p)
                    )
                )
                for db_file in files:
                    stats["databases"] += 1
                    await self.replicate_db(dev, part, db_file, stats)
        return stats

    async def replicate_db(
        self, dev: Device, part: int, db_file: Path, stats: dict[str, int]
    ) -> None:
        ring = self.cluster.rings[self.kind.name]
        probe = Broker(self.kind, db_file, "", "")
        try:
            info = await self.cluster.run(probe.get_info)
        finally:
            probe.close()
        broker = self.server.broker_at(db_file, info["account"], info["container"])
        primaries = ring.get_part_nodes(part)
        is_primary = any(p.id == dev.id for p in primaries)
        handoffs = (h for h in ring.get_more_nodes(part) if h.id != dev.id)
        all_ok = True
        for peer in (p for p in primaries if p.id != dev.id):
            target: Device | None = peer
            while target is not None:
                if await self.push(broker, info, part, target, stats):
                    break
                target = next(handoffs, None) if is_primary else None
            if target is None:
                all_ok = False
                stats["failures"] += 1
        if not is_primary and all_ok:
            self.node.brokers.forget(db_file)
            await self.cluster.run(shutil.rmtree, db_file.parent, True)
            stats["handoffs_removed"] += 1

    async def push(
        self, broker: Broker, info: dict[str, Any], part: int, peer: Device, stats: dict[str, int]
    ) -> bool:
        backend = self.cluster.backend(peer)
        path = (info["account"], info["container"], "")
        headers = {"x-backend-kind": self.kind.name}
        response = await backend.request(
            "REPLICATE",
            peer.device,
            part,
            path,
            headers,
            json.dumps({"op": "sync", "id": info["id"]}).encode(),
        )
        if response.status == 404:
            await response.close()
            point = -1
        elif response.ok:
            point = json.loads(await response.read())["point"]
        else:
            await response.close()
            return False
        plain = {k: v for k, v in info.items() if k not in ("reported", "max_row")}
        while True:
            rows = await self.cluster.run(broker.rows_since, point, ROWS_PER_REQUEST)
            new_point = rows[-1]["row_id"] if rows else point
            body = {
                "op": "merge",
                "id": info["id"],
                "info": plain,
                "rows": [
                    {k: v for k, v in r.items() if k not in ("row_id", "ROWID")} for r in rows
                ],
                "point": new_point,
            }
            result: BackendResponse = await backend.request(
                "REPLICATE", peer.device, part, path, headers, json.dumps(body).encode()
            )
            await result.close()
            if not result.ok:
                return False
            stats["rows"] += len(rows)
            point = new_point
            if len(rows) < ROWS_PER_REQUEST:
                return True


def database_replicators(*args: Any) -> list[DatabaseReplicator]:
    return [DatabaseReplicator(*args, kind=CONTAINER), DatabaseReplicator(*args, kind=ACCOUNT)]
