"""Building rings: devices, weights, and a rebalance that moves as little as it can.

A ring maps each of ``2 ** part_power`` partitions to ``replicas`` devices. The
builder keeps that table plus what an operator needs to change it later (the
devices, when each partition last moved, the cluster's hash suffix). Rebalance
works in three steps:

1. gather the partition-replicas that must or should move: those on removed or
   zero-weight devices (always), those that share a zone with another replica
   of the same partition while a zone holding none is available (dispersion),
   and the excess of devices holding more than their weight's share;
2. never gather two replicas of one partition in one rebalance, nor a partition
   moved within ``min_part_hours``, unless its device is gone;
3. place each gathered replica on the device that keeps the partition's
   replicas in the most distinct regions and zones and, among those, wants the
   most partitions (weight share minus what it holds).

Placement is deterministic for a given builder state.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import secrets
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NONE_DEV = 0xFFFF
MAX_PART_POWER = 22


class RingError(ValueError):
    """An operator error building a ring (bad device, bad parameters)."""


@dataclass
class Device:
    """One disk of one storage node."""

    id: int
    region: int
    zone: int
    ip: str
    port: int
    device: str
    weight: float
    meta: str = ""

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def describe(self) -> str:
        """Swift's notation: ``r1z2-127.0.0.1:6200/d1``."""
        return f"r{self.region}z{self.zone}-{self.ip}:{self.port}/{self.device}"


def parse_device(text: str, weight: float) -> dict[str, Any]:
    """Read Swift's ``r1z2-127.0.0.1:6200/d1`` notation into device fields."""
    try:
        location, device = text.split("/", 1)
        tier, address = location.split("-", 1)
        region_text, zone_text = tier[1:].split("z", 1) if tier.startswith("r") else ("1", tier)
        ip, port = address.rsplit(":", 1)
        return {
            "region": int(region_text),
            "zone": int(zone_text.lstrip("z")),
            "ip": ip.strip("[]"),
            "port": int(port),
            "device": device,
            "weight": weight,
        }
    except ValueError:
        raise RingError(
            f"invalid device {text!r}: expected r<region>z<zone>-<ip>:<port>/<device>"
        ) from None


class RingBuilder:
    """The operator's view of one ring: parameters, devices and the assignment table."""

    def __init__(
        self,
        part_power: int,
        replicas: int,
        min_part_hours: int = 1,
        *,
        hash_path_suffix: str | None = None,
    ):
        if not 1 <= part_power <= MAX_PART_POWER:
            raise RingError(f"partition power must be between 1 and {MAX_PART_POWER}")
        if not 1 <= replicas <= 16:
            raise RingError("replicas must be between 1 and 16")
        if min_part_hours < 0:
            raise RingError("min_part_hours cannot be negative")
        self.part_power = part_power
        self.replicas = replicas
        self.min_part_hours = min_part_hours
        self.hash_path_suffix = hash_path_suffix or secrets.token_hex(8)
        self.devs: list[Device | None] = []
        self.assignment: list[array[int]] = []
        self.last_moved: array[int] = array("I", [0] * self.parts)
        self.version = 0
        self.default_layout = False

    @property
    def parts(self) -> int:
        return 1 << self.part_power

    def active_devices(self) -> list[Device]:
        """Devices that hold partitions (present, weight above zero)."""
        return [d for d in self.devs if d is not None and d.weight > 0]

    # -- devices ---------------------------------------------------------------------------

    def add_device(
        self,
        *,
        region: int = 1,
        zone: int,
        ip: str,
        port: int,
        device: str,
        weight: float,
        meta: str = "",
    ) -> Device:
        """Add a device; it takes partitions at the next rebalance."""
        if weight < 0:
            raise RingError("weight cannot be negative")
        if not device or "/" in device:
            raise RingError(f"invalid device name {device!r}")
        if not 0 < port < 65536:
            raise RingError(f"invalid port {port}")
        for existing in self.devs:
            if existing and (existing.ip, existing.port, existing.device) == (ip, port, device):
                raise RingError(f"device {existing.describe()} is already in the ring")
        if len(self.devs) >= NONE_DEV:
            raise RingError("too many devices")
        dev = Device(len(self.devs), region, zone, ip, port, device, float(weight), meta)
        self.devs.append(dev)
        return dev

    def find(self, search: str) -> list[Device]:
        """Devices matching an id (``d3``), a device name, an ``ip:port`` or Swift's notation."""
        found = []
        for dev in self.devs:
            if dev is None:
                continue
            names = (f"d{dev.id}", str(dev.id), dev.device, dev.address, dev.describe(), dev.ip)
            if search in names or search == f"{dev.address}/{dev.device}":
                found.append(dev)
        return found

    def set_weight(self, dev_id: int, weight: float) -> None:
        """Change a device's weight; partitions follow at the next rebalance."""
        if weight < 0:
            raise RingError("weight cannot be negative")
        self._device(dev_id).weight = float(weight)

    def set_port(self, dev_id: int, port: int) -> None:
        """Point a device at another port (the node moved); no partition moves."""
        self._device(dev_id).port = port

    def remove_device(self, dev_id: int) -> None:
        """Take a device out; its partitions move at the next rebalance."""
        self._device(dev_id)
        self.devs[dev_id] = None

    def _device(self, dev_id: int) -> Device:
        if not 0 <= dev_id < len(self.devs) or self.devs[dev_id] is None:
            raise RingError(f"no device with id {dev_id}")
        dev = self.devs[dev_id]
        assert dev is not None
        return dev

    # -- rebalance -------------------------------------------------------------------------

    def rebalance(
        self, *, seed: int | None = None, now: float | None = None, force: bool = False
    ) -> int:
        """Reassign partitions; returns how many partition-replicas moved.

        ``force`` ignores ``min_part_hours`` (the operator knows replication caught up).
        """
        devices = self.active_devices()
        if len(devices) == 0:
            raise RingError("the ring has no device with weight above zero")
        if not self.assignment:
            self.assignment = [array("H", [NONE_DEV] * self.parts) for _ in range(self.replicas)]
        hours = int((time.time() if now is None else now) // 3600)
        rng = random.Random(seed if seed is not None else self.version)
        by_id = {d.id: d for d in devices}
        total_weight = sum(d.weight for d in devices)
        slots = self.parts * self.replicas
        desired = {d.id: d.weight / total_weight * slots for d in devices}
        counts = dict.fromkeys(by_id, 0)
        for table in self.assignment:
            for dev_id in table:
                if dev_id in counts:
                    counts[dev_id] += 1
        zones_available = len({(d.region, d.zone) for d in devices})
        regions_available = len({d.region for d in devices})

        gathered: list[tuple[int, int, int]] = []
        touched: set[int] = set()

        def movable(part: int) -> bool:
            if part in touched:
                return False
            return force or hours - self.last_moved[part] >= self.min_part_hours

        # 1. replicas whose device is gone (or lost its weight) must move.
        for replica, table in enumerate(self.assignment):
            for part in range(self.parts):
                if table[part] not in by_id:
                    gathered.append((part, replica, table[part]))
                    table[part] = NONE_DEV
                    touched.add(part)
        # 2. replicas doubled up in a region or zone while another is free.
        for part in range(self.parts):
            if part in touched or not movable(part):
                continue
            holders = [by_id[t[part]] for t in self.assignment]
            move = _worst_doubled(holders, zones_available, regions_available)
            if move is not None:
                replica = move
                old = self.assignment[replica][part]
                counts[old] -= 1
                self.assignment[replica][part] = NONE_DEV
                gathered.append((part, replica, old))
                touched.add(part)
        # 3. the excess of devices holding more than their share.
        order = list(range(self.parts))
        rng.shuffle(order)
        for dev in sorted(devices, key=lambda d: counts[d.id] - desired[d.id], reverse=True):
            excess = math.floor(counts[dev.id] - desired[dev.id])
            if excess <= 0:
                continue
            for part in order:
                if excess <= 0:
                    break
                if not movable(part):
                    continue
                for replica, table in enumerate(self.assignment):
                    if table[part] == dev.id:
                        table[part] = NONE_DEV
                        counts[dev.id] -= 1
                        gathered.append((part, replica, dev.id))
                        touched.add(part)
                        excess -= 1
                        break

        moved = 0
        for part, replica, old in gathered:
            others = [by_id[t[part]] for t in self.assignment if t[part] in by_id]
            target = _best_device(devices, others, counts, desired)
            self.assignment[replica][part] = target.id
            counts[target.id] += 1
            if target.id != old:
                moved += 1
                self.last_moved[part] = hours
        self.version += 1
        return moved

    def balance(self) -> float:
        """The worst device's distance from its weight share, in percent."""
        devices = self.active_devices()
        if not devices or not self.assignment:
            return 0.0
        total = sum(d.weight for d in devices)
        counts = dict.fromkeys((d.id for d in devices), 0)
        for table in self.assignment:
            for dev_id in table:
                if dev_id in counts:
                    counts[dev_id] += 1
        slots = self.parts * self.replicas
        return max(
            abs(counts[d.id] - d.weight / total * slots) / (d.weight / total * slots) * 100
            for d in devices
        )

    def dispersion_violations(self) -> int:
        """Partitions with two replicas in one zone although a free zone exists."""
        devices = self.active_devices()
        by_id = {d.id: d for d in devices}
        zones = len({(d.region, d.zone) for d in devices})
        regions = len({d.region for d in devices})
        bad = 0
        for part in range(self.parts):
            holders = [by_id[t[part]] for t in self.assignment if t[part] in by_id]
            if _worst_doubled(holders, zones, regions) is not None:
                bad += 1
        return bad

    # -- files -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "part_power": self.part_power,
            "replicas": self.replicas,
            "min_part_hours": self.min_part_hours,
            "hash_path_suffix": self.hash_path_suffix,
            "version": self.version,
            "default_layout": self.default_layout,
            "devs": [asdict(d) if d else None for d in self.devs],
            "assignment": [base64.b64encode(t.tobytes()).decode() for t in self.assignment],
            "last_moved": base64.b64encode(self.last_moved.tobytes()).decode(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RingBuilder:
        builder = cls(
            data["part_power"],
            data["replicas"],
            data["min_part_hours"],
            hash_path_suffix=data["hash_path_suffix"],
        )
        builder.version = data["version"]
        builder.default_layout = data.get("default_layout", False)
        builder.devs = [Device(**d) if d else None for d in data["devs"]]
        builder.assignment = []
        for encoded in data["assignment"]:
            table = array("H")
            table.frombytes(base64.b64decode(encoded))
            builder.assignment.append(table)
        builder.last_moved = array("I")
        builder.last_moved.frombytes(base64.b64decode(data["last_moved"]))
        return builder

    def save(self, path: Path) -> None:
        """Write the builder file atomically."""
        atomic_write(path, json.dumps(self.to_dict()).encode())

    @classmethod
    def load(cls, path: Path) -> RingBuilder:
        try:
            return cls.from_dict(json.loads(path.read_bytes()))
        except FileNotFoundError:
            raise RingError(f"no ring builder at {path}; create it first") from None

    def ring_data(self) -> dict[str, Any]:
        """What running servers need: devices, the table, the hash suffix."""
        if not self.assignment or any(NONE_DEV in t for t in self.assignment):
            raise RingError("the ring has unassigned partitions; rebalance it first")
        return {
            "version": self.version,
            "part_shift": 32 - self.part_power,
            "replicas": self.replicas,
            "hash_path_suffix": self.hash_path_suffix,
            "devs": [asdict(d) if d else None for d in self.devs],
        }


def _worst_doubled(holders: list[Device], zones: int, regions: int) -> int | None:
    """The replica index to move when two replicas share a region or zone needlessly."""
    wanted_regions = min(len(holders), regions)
    wanted_zones = min(len(holders), zones)
    seen_regions: set[int] = set()
    seen_zones: set[tuple[int, int]] = set()
    doubled_region = doubled_zone = None
    for index, dev in enumerate(holders):
        if dev.region in seen_regions and doubled_region is None:
            doubled_region = index
        if (dev.region, dev.zone) in seen_zones and doubled_zone is None:
            doubled_zone = index
        seen_regions.add(dev.region)
        seen_zones.add((dev.region, dev.zone))
    if len(seen_regions) < wanted_regions and doubled_region is not None:
        return doubled_region
    if len(seen_zones) < wanted_zones and doubled_zone is not None:
        return doubled_zone
    if len({d.id for d in holders}) < len(holders):
        ids: set[int] = set()
        for index, dev in enumerate(holders):
            if dev.id in ids:
                return index
            ids.add(dev.id)
    return None


def _best_device(
    devices: list[Device],
    others: list[Device],
    counts: dict[int, int],
    desired: dict[int, float],
) -> Device:
    """The device that spreads a partition best and, among those, wants the most."""
    used_regions = {d.region for d in others}
    used_zones = {(d.region, d.zone) for d in others}
    used_ips = {(d.region, d.zone, d.ip) for d in others}
    used_ids = {d.id for d in others}

    def key(dev: Device) -> tuple[bool, bool, bool, bool, float, int]:
        return (
            dev.id in used_ids,
            dev.region in used_regions,
            (dev.region, dev.zone) in used_zones,
            (dev.region, dev.zone, dev.ip) in used_ips,
            -(desired[dev.id] - counts[dev.id]) / desired[dev.id],
            dev.id,
        )

    return min(devices, key=key)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
