"""The ring as servers use it: partition of a name, its primary nodes and handoffs.

Ring files are written by the builder (``<kind>.ring.gz``: a JSON header line,
then the replica-to-partition-to-device table as unsigned 16-bit integers) and
reloaded by every server when the file changes on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onestack.object.ring.builder import NONE_DEV, Device, RingBuilder, RingError, atomic_write

KINDS = ("account", "container", "object")
RELOAD_CHECK_SECONDS = 1.0


def write_ring(builder: RingBuilder, path: Path) -> None:
    """Serialize ``builder``'s current placement into the ring file servers load."""
    header = json.dumps(builder.ring_data()).encode()
    body = b"".join(table.tobytes() for table in builder.assignment)
    atomic_write(path, gzip.compress(header + b"\n" + body, compresslevel=1))


class Ring:
    """One loaded ring; ``get_nodes`` reloads it when its file changed."""

    def __init__(self, path: Path):
        self.path = path
        self._mtime = 0.0
        self._checked = 0.0
        self.devs: list[Device | None] = []
        self.replicas = 0
        self.part_shift = 32
        self.hash_path_suffix = b""
        self.version = 0
        self._table: list[array[int]] = []
        self._load()

    def _load(self) -> None:
        try:
            stat = os.stat(self.path)
            raw = gzip.decompress(self.path.read_bytes())
        except FileNotFoundError:
            raise RingError(f"no ring file at {self.path}") from None
        header_bytes, _, body = raw.partition(b"\n")
        header: dict[str, Any] = json.loads(header_bytes)
        self.devs = [Device(**d) if d else None for d in header["devs"]]
        self.replicas = header["replicas"]
        self.part_shift = header["part_shift"]
        self.hash_path_suffix = header["hash_path_suffix"].encode()
        self.version = header["version"]
        parts = 1 << (32 - self.part_shift)
        tables = []
        for replica in range(self.replicas):
            table = array("H")
            table.frombytes(body[replica * parts * 2 : (replica + 1) * parts * 2])
            tables.append(table)
        self._table = tables
        self._mtime = stat.st_mtime

    def reload_if_changed(self) -> None:
        """Check the file at most once a second; load it again when it changed."""
        now = time.monotonic()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._load()

    @property
    def partitions(self) -> int:
        return 1 << (32 - self.part_shift)

    def hash_path(self, account: str, container: str = "", obj: str = "") -> str:
        """The md5 hex of a name: where its files live on disk and what picks its partition."""
        parts = [account] + ([container] if container else []) + ([obj] if obj else [])
        joined = ("/" + "/".join(parts)).encode()
        return hashlib.md5(joined + self.hash_path_suffix, usedforsecurity=False).hexdigest()

    def partition_of_hash(self, name_hash: str) -> int:
        return int(struct.unpack_from(">I", bytes.fromhex(name_hash[:8]))[0]) >> self.part_shift

    def get_part(self, account: str, container: str = "", obj: str = "") -> int:
        return self.partition_of_hash(self.hash_path(account, container, obj))

    def get_part_nodes(self, part: int) -> list[Device]:
        """The primary devices of a partition, in replica order."""
        self.reload_if_changed()
        nodes: list[Device] = []
        for table in self._table:
            dev_id = table[part]
            dev = self.devs[dev_id] if dev_id != NONE_DEV else None
            if dev is not None and dev not in nodes:
                nodes.append(dev)
        return nodes

    def get_nodes(
        self, account: str, container: str = "", obj: str = ""
    ) -> tuple[int, list[Device]]:
        """The partition of a name and its primary devices."""
        part = self.get_part(account, container, obj)
        return part, self.get_part_nodes(part)

    def get_more_nodes(self, part: int) -> Iterator[Device]:
        """Handoff devices for a partition: new regions first, then zones, then hosts."""
        primaries = self.get_part_nodes(part)
        used_regions = {d.region for d in primaries}
        used_zones = {(d.region, d.zone) for d in primaries}
        used_ips = {(d.region, d.zone, d.ip) for d in primaries}
        primary_ids = {d.id for d in primaries}

        def key(dev: Device) -> tuple[bool, bool, bool, str]:
            spread = hashlib.md5(f"{part}-{dev.id}".encode(), usedforsecurity=False).hexdigest()
            return (
                dev.region in used_regions,
                (dev.region, dev.zone) in used_zones,
                (dev.region, dev.zone, dev.ip) in used_ips,
                spread,
            )

        others = [d for d in self.devs if d and d.weight > 0 and d.id not in primary_ids]
        yield from sorted(others, key=key)

    def local_devices(self, addresses: set[str]) -> list[Device]:
        """Devices of this ring served at one of ``addresses`` (``ip:port``)."""
        self.reload_if_changed()
        return [d for d in self.devs if d is not None and d.address in addresses]


class RingSet:
    """The account, container and object rings of one cluster, from one directory."""

    def __init__(self, rings_dir: Path):
        self.rings_dir = rings_dir
        self.account = Ring(rings_dir / "account.ring.gz")
        self.container = Ring(rings_dir / "container.ring.gz")
        self.object = Ring(rings_dir / "object.ring.gz")

    def __getitem__(self, kind: str) -> Ring:
        if kind not in KINDS:
            raise KeyError(kind)
        ring: Ring = getattr(self, kind)
        return ring

    def all_devices(self) -> list[Device]:
        """Every device of every ring, once per (address, device name)."""
        seen: dict[tuple[str, str], Device] = {}
        for kind in KINDS:
            for dev in self[kind].devs:
                if dev is not None:
                    seen.setdefault((dev.address, dev.device), dev)
        return list(seen.values())
