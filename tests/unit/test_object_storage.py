"""Object files and listing databases on one device: newest wins, corruption is caught."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from onestack.object.storage.databases import ACCOUNT, CONTAINER, Broker
from onestack.object.storage.diskfile import (
    BLOCK,
    Conflict,
    DeviceUnavailable,
    DiskReader,
    EtagMismatch,
    ObjectDisk,
    Quarantined,
)

HASH = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def disk(tmp_path: Path) -> ObjectDisk:
    (tmp_path / "d1").mkdir()
    return ObjectDisk(tmp_path)


def write(disk: ObjectDisk, timestamp: str, data: bytes, **meta: str) -> str:
    writer = disk.create("d1", 7, HASH, timestamp)
    writer.write(data)
    return writer.commit({"name": "/a/c/o", **meta})


def test_newest_write_wins_and_older_ones_conflict(disk: ObjectDisk) -> None:
    write(disk, "0000000001.00000", b"old")
    write(disk, "0000000002.00000", b"new", **{"x-object-meta-k": "v"})
    reader = disk.open("d1", 7, HASH)
    assert isinstance(reader, DiskReader)
    assert b"".join(reader.read_range(0, reader.size)) == b"new"
    assert reader.metadata["x-object-meta-k"] == "v"
    reader.close()
    with pytest.raises(Conflict):
        disk.create("d1", 7, HASH, "0000000001.50000")
    files = os.listdir(disk.hash_dir("d1", 7, HASH))
    assert files == ["0000000002.00000.data"]


def test_tombstone_and_post_metadata(disk: ObjectDisk) -> None:
    now = time.time()
    t1, t2, t3 = (f"{now + i:016.5f}" for i in range(3))
    write(disk, t1, b"x", **{"x-object-meta-a": "1"})
    disk.write_marker("d1", 7, HASH, t2, "meta", {"x-timestamp": t2, "x-object-meta-b": "2"})
    reader = disk.open("d1", 7, HASH)
    assert isinstance(reader, DiskReader)
    assert "x-object-meta-a" not in reader.metadata
    assert reader.metadata["x-object-meta-b"] == "2"
    reader.close()
    disk.write_marker("d1", 7, HASH, t3, "ts", {"x-timestamp": t3})
    state = disk.open("d1", 7, HASH)
    assert not isinstance(state, DiskReader) and state.tombstone == t3
    assert os.listdir(disk.hash_dir("d1", 7, HASH)) == [f"{t3}.ts"]


def test_old_tombstones_are_reclaimed(disk: ObjectDisk) -> None:
    disk.write_marker("d1", 7, HASH, "0000000003.00000", "ts", {"x-timestamp": "0000000003.00000"})
    assert not disk.hash_dir("d1", 7, HASH).exists()


def test_etag_mismatch_leaves_nothing(disk: ObjectDisk) -> None:
    writer = disk.create("d1", 7, HASH, "0000000001.00000")
    writer.write(b"abc")
    with pytest.raises(EtagMismatch):
        writer.commit({"name": "/a/c/o"}, expected_etag="0" * 32)
    assert not disk.hash_dir("d1", 7, HASH).exists()
    assert os.listdir(disk.devices_dir / "d1" / "tmp") == []


def test_corrupt_block_is_quarantined_before_it_is_served(disk: ObjectDisk) -> None:
    data = os.urandom(2 * BLOCK + 10)
    write(disk, "0000000001.00000", data)
    path = disk.hash_dir("d1", 7, HASH) / "0000000001.00000.data"
    with open(path, "r+b") as handle:
        handle.seek(BLOCK + 5)
        handle.write(b"\x00" if data[BLOCK + 5] else b"\x01")
    reader = disk.open("d1", 7, HASH)
    assert isinstance(reader, DiskReader)
    assert reader.read_block(0) == data[:BLOCK]
    with pytest.raises(Quarantined):
        reader.read_block(1)
    assert not disk.hash_dir("d1", 7, HASH).exists()
    assert (disk.devices_dir / "d1" / "quarantined" / "objects" / HASH).is_dir()


def test_missing_device_is_unavailable_and_never_recreated(disk: ObjectDisk) -> None:
    with pytest.raises(DeviceUnavailable):
        disk.create("d9", 7, HASH, "0000000001.00000")
    assert not (disk.devices_dir / "d9").exists()


def test_suffix_hashes_change_with_writes(disk: ObjectDisk) -> None:
    write(disk, "0000000001.00000", b"x")
    first = disk.suffix_hashes("d1", 7)
    assert list(first) == [HASH[-3:]]
    write(disk, "0000000002.00000", b"y")
    second = disk.suffix_hashes("d1", 7)
    assert second[HASH[-3:]] != first[HASH[-3:]]
    assert disk.suffix_contents("d1", 7, [HASH[-3:]]) == {HASH: {"data": "0000000002.00000"}}


def container(tmp_path: Path) -> Broker:
    broker = Broker(CONTAINER, tmp_path / "c.db", "a", "c")
    assert broker.initialize("0000000001.00000")
    return broker


def row(name: str, ts: str, size: int = 1, deleted: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "created_at": ts,
        "size": size,
        "content_type": "t",
        "etag": "e",
        "deleted": deleted,
    }


def test_container_rows_merge_newest_wins_with_totals(tmp_path: Path) -> None:
    broker = container(tmp_path)
    broker.put_pending(row("o", "0000000002.00000", 10))
    broker.put_pending(row("o", "0000000001.00000", 99))
    broker.put_pending(row("p", "0000000002.00000", 5))
    info = broker.get_info()
    assert (info["item_count"], info["bytes_used"]) == (2, 15)
    broker.merge_items([row("p", "0000000003.00000", deleted=1)])
    info = broker.get_info()
    assert (info["item_count"], info["bytes_used"]) == (1, 10)
    assert [r["name"] for r in broker.list_rows(limit=10)] == ["o"]
    broker.close()


def test_listing_prefix_delimiter_markers_and_reverse(tmp_path: Path) -> None:
    broker = container(tmp_path)
    names = ["a/1", "a/2", "a0", "b", "b/x/1", "c"]
    broker.merge_items([row(n, "0000000002.00000") for n in names])

    def listed(**kw: object) -> list[str]:
        return [r.get("subdir") or r["name"] for r in broker.list_rows(limit=100, **kw)]

    assert listed(delimiter="/") == ["a/", "a0", "b", "b/", "c"]
    assert listed(prefix="b/", delimiter="/") == ["b/x/"]
    assert listed(marker="a0", end_marker="c") == ["b", "b/x/1"]
    assert listed(reverse=True, delimiter="/") == ["c", "b/", "b", "a0", "a/"]
    assert [r["name"] for r in broker.list_rows(limit=2)] == ["a/1", "a/2"]
    broker.close()


def test_account_rows_take_the_newest_report(tmp_path: Path) -> None:
    broker = Broker(ACCOUNT, tmp_path / "a.db", "a")
    broker.initialize("0000000001.00000")
    base = {
        "name": "c",
        "put_timestamp": "0000000001.00000",
        "delete_timestamp": "0000000000.00000",
    }
    broker.merge_items(
        [{**base, "object_count": 3, "bytes_used": 30, "stats_timestamp": "0000000005.00000"}]
    )
    broker.merge_items(
        [{**base, "object_count": 1, "bytes_used": 10, "stats_timestamp": "0000000004.00000"}]
    )
    assert broker.account_totals() == (3, 30)
    broker.merge_items(
        [
            {
                **base,
                "delete_timestamp": "0000000006.00000",
                "object_count": 0,
                "bytes_used": 0,
                "stats_timestamp": "0000000006.00000",
            }
        ]
    )
    assert broker.get_info()["item_count"] == 0
    broker.close()


def test_stale_temporary_files_are_removed(disk: ObjectDisk) -> None:
    writer = disk.create("d1", 7, HASH, "0000000001.00000")
    writer.write(b"interrupted")
    assert disk.clean_tmp("d1") == 0
    os.utime(writer.tmp, (1, 1))
    assert disk.clean_tmp("d1") == 1
    assert os.listdir(disk.devices_dir / "d1" / "tmp") == []
    writer.abort()
