"""Ring placement, rebalance movement and zone spread."""

from __future__ import annotations

from pathlib import Path

import pytest

from onestack.object.ring import Ring, RingBuilder
from onestack.object.ring.builder import RingError, parse_device
from onestack.object.ring.layout import ensure_default_rings
from onestack.object.ring.ring import write_ring


def four_zones(part_power: int = 8) -> RingBuilder:
    builder = RingBuilder(part_power, 3, 0)
    for zone in range(1, 5):
        builder.add_device(zone=zone, ip="127.0.0.1", port=6200, device=f"d{zone}", weight=100)
    builder.rebalance(seed=1)
    return builder


def test_every_partition_has_three_replicas_in_distinct_zones() -> None:
    builder = four_zones()
    assert builder.dispersion_violations() == 0
    by_id = {d.id: d for d in builder.active_devices()}
    for part in range(builder.parts):
        zones = {by_id[table[part]].zone for table in builder.assignment}
        assert len(zones) == 3
    assert builder.balance() < 1.0


def test_adding_a_device_moves_about_its_share_and_no_more() -> None:
    builder = four_zones(10)
    before = [list(t) for t in builder.assignment]
    builder.add_device(zone=5, ip="127.0.0.1", port=6200, device="d5", weight=100)
    moved = builder.rebalance(seed=2)
    ideal = builder.parts * 3 / 5
    changed = sum(
        1
        for r in range(3)
        for p in range(builder.parts)
        if before[r][p] != builder.assignment[r][p]
    )
    assert changed == moved
    assert ideal * 0.95 <= moved <= ideal * 1.05
    assert builder.dispersion_violations() == 0
    assert builder.balance() < 2.0


def test_weights_decide_shares() -> None:
    builder = RingBuilder(10, 3, 0)
    for zone, weight in ((1, 100), (2, 100), (3, 100), (4, 200)):
        builder.add_device(zone=zone, ip="10.0.0.1", port=6200, device=f"d{zone}", weight=weight)
    builder.rebalance(seed=3)
    counts = {d.id: 0 for d in builder.active_devices()}
    for table in builder.assignment:
        for dev_id in table:
            counts[dev_id] += 1
    # The heavy device wants 2/5 of the replicas but may hold at most one per partition.
    assert counts[3] == builder.parts
    assert builder.dispersion_violations() == 0


def test_removing_a_device_moves_only_its_partitions() -> None:
    builder = four_zones(8)
    builder.add_device(zone=5, ip="127.0.0.1", port=6200, device="d5", weight=100)
    builder.rebalance(seed=4, force=True)
    before = [list(t) for t in builder.assignment]
    held = sum(1 for t in before for d in t if d == 0)
    builder.remove_device(0)
    moved = builder.rebalance(seed=5, force=True)
    assert all(0 not in t for t in builder.assignment)
    assert held <= moved <= held * 1.3
    assert builder.dispersion_violations() == 0


def test_fewer_zones_than_replicas_still_spread_as_far_as_possible() -> None:
    builder = RingBuilder(8, 3, 0)
    for number in range(4):
        builder.add_device(
            zone=number % 2 + 1, ip="127.0.0.1", port=6200 + number, device=f"d{number}", weight=100
        )
    builder.rebalance(seed=6)
    by_id = {d.id: d for d in builder.active_devices()}
    for part in range(builder.parts):
        devices = {table[part] for table in builder.assignment}
        zones = {by_id[d].zone for d in devices}
        assert len(devices) == 3 and zones == {1, 2}


def test_min_part_hours_holds_recently_moved_partitions() -> None:
    builder = RingBuilder(8, 3, 1)
    for zone in range(1, 5):
        builder.add_device(zone=zone, ip="127.0.0.1", port=6200, device=f"d{zone}", weight=100)
    builder.rebalance(seed=1, now=3600 * 10)
    builder.add_device(zone=5, ip="127.0.0.1", port=6200, device="d5", weight=100)
    assert builder.rebalance(seed=2, now=3600 * 10) == 0
    assert builder.rebalance(seed=2, now=3600 * 12) > 0


def test_ring_file_places_names_and_handoffs(tmp_path: Path) -> None:
    builder = four_zones()
    write_ring(builder, tmp_path / "object.ring.gz")
    ring = Ring(tmp_path / "object.ring.gz")
    part, nodes = ring.get_nodes("AUTH_a", "c", "o")
    assert 0 <= part < 256 and len(nodes) == 3
    assert ring.get_nodes("AUTH_a", "c", "o") == (part, nodes)
    handoffs = list(ring.get_more_nodes(part))
    assert len(handoffs) == 1 and handoffs[0] not in nodes


def test_ring_reloads_when_the_file_changes(tmp_path: Path) -> None:
    builder = four_zones()
    path = tmp_path / "object.ring.gz"
    write_ring(builder, path)
    ring = Ring(path)
    builder.set_port(0, 7000)
    write_ring(builder, path)
    import os

    os.utime(path, (1, 1))
    ring._checked = 0
    ring.reload_if_changed()
    assert ring.devs[0] is not None and ring.devs[0].port == 7000


def test_default_layout_is_quick_and_follows_the_port(tmp_path: Path) -> None:
    import time

    started = time.perf_counter()
    assert ensure_default_rings(tmp_path / "rings", tmp_path / "devs", "127.0.0.1", 8000)
    assert time.perf_counter() - started < 5  # generous: CI machines are loaded
    assert sorted(p.name for p in (tmp_path / "devs").iterdir()) == ["d1", "d2", "d3", "d4"]
    assert not ensure_default_rings(tmp_path / "rings", tmp_path / "devs", "127.0.0.1", 8000)
    assert ensure_default_rings(tmp_path / "rings", tmp_path / "devs", "127.0.0.1", 9000)
    ring = Ring(tmp_path / "rings" / "object.ring.gz")
    assert {d.port for d in ring.devs if d} == {9000}


def test_device_notation_and_errors() -> None:
    assert parse_device("r2z3-10.0.0.5:6200/sdb", 50) == {
        "region": 2,
        "zone": 3,
        "ip": "10.0.0.5",
        "port": 6200,
        "device": "sdb",
        "weight": 50,
    }
    with pytest.raises(RingError):
        parse_device("nonsense", 1)
    builder = RingBuilder(4, 3, 0)
    with pytest.raises(RingError):
        builder.rebalance()
    builder.add_device(zone=1, ip="a", port=1, device="d", weight=1)
    with pytest.raises(RingError):
        builder.add_device(zone=1, ip="a", port=1, device="d", weight=1)
    with pytest.raises(RingError):
        RingBuilder(30, 3)
