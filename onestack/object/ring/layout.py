"""Ring files in one directory: what ``onestack ring`` edits and the all-in-one default layout."""

from __future__ import annotations

import secrets
from pathlib import Path

from onestack.object.ring.builder import RingBuilder, RingError
from onestack.object.ring.ring import KINDS, write_ring

DEFAULT_DEVICES = 4


def builder_path(rings_dir: Path, kind: str) -> Path:
    if kind not in KINDS:
        raise RingError(f"unknown ring {kind!r}: one of {', '.join(KINDS)}")
    return rings_dir / f"{kind}.builder"


def ring_path(rings_dir: Path, kind: str) -> Path:
    return rings_dir / f"{kind}.ring.gz"


def cluster_suffix(rings_dir: Path) -> str:
    """The hash path suffix every ring of this cluster shares (kept beside the rings)."""
    path = rings_dir / "hash_path_suffix"
    if path.exists():
        return path.read_text().strip()
    rings_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(8)
    path.write_text(value + "\n")
    return value


def create(
    rings_dir: Path, kind: str, part_power: int, replicas: int, min_part_hours: int
) -> RingBuilder:
    """A new empty builder for ``kind``; refuses to overwrite an existing one."""
    path = builder_path(rings_dir, kind)
    if path.exists():
        raise RingError(f"{path} exists; remove it to start over")
    builder = RingBuilder(
        part_power, replicas, min_part_hours, hash_path_suffix=cluster_suffix(rings_dir)
    )
    builder.save(path)
    return builder


def load(rings_dir: Path, kind: str) -> RingBuilder:
    return RingBuilder.load(builder_path(rings_dir, kind))


def save_and_publish(rings_dir: Path, kind: str, builder: RingBuilder) -> None:
    """Write the builder and, when every partition is placed, the ring servers load."""
    builder.save(builder_path(rings_dir, kind))
    if builder.assignment:
        write_ring(builder, ring_path(rings_dir, kind))


def ensure_default_rings(
    rings_dir: Path,
    devices_dir: Path,
    ip: str,
    port: int,
    *,
    part_power: int = 10,
    replicas: int = 3,
    devices: int = DEFAULT_DEVICES,
) -> bool:
    """The all-in-one layout: one node, ``devices`` directories, one zone each.

    Created on first start (milliseconds at partition power 10). When the rings
    were made this way and the process now listens on another port, the devices
    follow it without moving any partition. Returns whether anything was written.
    """
    changed = False
    for kind in KINDS:
        path = builder_path(rings_dir, kind)
        if not path.exists():
            builder = RingBuilder(
                part_power, replicas, 0, hash_path_suffix=cluster_suffix(rings_dir)
            )
            builder.default_layout = True
            for number in range(1, devices + 1):
                builder.add_device(
                    region=1, zone=number, ip=ip, port=port, device=f"d{number}", weight=100
                )
            builder.rebalance(seed=0)
            save_and_publish(rings_dir, kind, builder)
            changed = True
            continue
        builder = RingBuilder.load(path)
        if not builder.default_layout:
            continue
        moved = [d for d in builder.devs if d is not None and (d.ip, d.port) != (ip, port)]
        for dev in moved:
            dev.ip = ip
            builder.set_port(dev.id, port)
        if moved or not ring_path(rings_dir, kind).exists():
            save_and_publish(rings_dir, kind, builder)
            changed = True
    for dev_name in (f"d{n}" for n in range(1, devices + 1)):
        (devices_dir / dev_name).mkdir(parents=True, exist_ok=True)
    return changed
