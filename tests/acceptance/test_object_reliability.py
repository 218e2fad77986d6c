"""Reliability with real storage-node processes: lost devices, corrupt replicas, dead nodes,
and crashes in the middle of an upload. Nothing acknowledged is ever lost or served corrupt."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from onestack.object.proxy.store import Store
from tests.acceptance.object_nodes import NodeSet

ACCOUNT = "AUTH_reliability"


@pytest.fixture(scope="module")
def node_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSet]:
    nodes = NodeSet(tmp_path_factory.mktemp("object-nodes"))
    nodes.start_all()
    yield nodes
    nodes.stop_all()


@pytest.fixture
def nodes(node_set: NodeSet) -> NodeSet:
    """The module's nodes, all running again whatever the previous test stopped."""
    node_set.ensure_running()
    return node_set


async def body(data: bytes, chunk: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def put(store: Store, container: str, name: str, data: bytes) -> int:
    status, _ = await store.put_object(
        ACCOUNT, container, name, {"content-length": str(len(data))}, body(data)
    )
    return status


async def read(store: Store, container: str, name: str) -> bytes | None:
    response = await store.get_object(ACCOUNT, container, name)
    if response.status != 200:
        await response.close()
        return None
    return await response.read()


def lose_device(path: Path) -> None:
    """The disk dies: its directory goes, even while the node is writing into it."""
    while path.exists():
        shutil.rmtree(path, ignore_errors=True)


def payload(seed: int) -> bytes:
    rng = random.Random(seed)
    size = rng.choice([1, 700, 4096, 90_000, 2_500_000])
    return rng.randbytes(size)


def test_device_lost_during_writes_nothing_acknowledged_is_lost(nodes: NodeSet) -> None:
    async def scenario() -> None:
        cluster, store = nodes.store()
        try:
            assert await store.write_container("PUT", ACCOUNT, "lost", {}) in (201, 202)
            written: dict[str, bytes] = {}

            async def writer(start: int) -> None:
                for number in range(start, start + 15):
                    data = payload(number)
                    if await put(store, "lost", f"o{number}", data) == 201:
                        written[f"o{number}"] = data
                    if number == start + 5 and start == 0:
                        lose_device(nodes.devices / "d2")

            await asyncio.gather(*(writer(s) for s in (0, 100, 200)))
            assert len(written) == 45, "every write succeeds with one device gone"
            for name, data in written.items():
                assert await read(store, "lost", name) == data
            await nodes.agents_here("object-replicator")
            for name in written:
                devices = nodes.replicas_on_disk(store, ACCOUNT, "lost", name)
                assert len(devices) >= 3 and "d2" not in devices, (name, devices)
            # The disk is replaced: the replicators fill it and the handoffs let go.
            (nodes.devices / "d2").mkdir()
            await nodes.agents_here("object-replicator", "object-replicator")
            for name, data in written.items():
                part = store.rings.object.get_part(ACCOUNT, "lost", name)
                primaries = {d.device for d in store.rings.object.get_part_nodes(part)}
                devices = nodes.replicas_on_disk(store, ACCOUNT, "lost", name)
                assert set(devices) == primaries, (name, devices, primaries)
                assert await read(store, "lost", name) == data
        finally:
            await cluster.close()

    asyncio.run(scenario())


def test_corrupt_replica_is_never_served_and_is_replaced(nodes: NodeSet) -> None:
    async def scenario() -> None:
        cluster, store = nodes.store()
        try:
            await store.write_container("PUT", ACCOUNT, "corrupt", {})
            small, large = os.urandom(5000), os.urandom(3 * 1024 * 1024 + 17)
            assert await put(store, "corrupt", "small", small) == 201
            assert await put(store, "corrupt", "large", large) == 201
            for name, offset in (("small", 100), ("large", 2 * 1024 * 1024 + 5)):
                devices = nodes.replicas_on_disk(store, ACCOUNT, "corrupt", name)
                name_hash = store.rings.object.hash_path(ACCOUNT, "corrupt", name)
                data_file = next((nodes.devices / devices[0]).rglob(f"{name_hash}/*.data"))
                with open(data_file, "r+b") as handle:
                    handle.seek(offset)
                    original = handle.read(1)
                    handle.seek(offset)
                    handle.write(bytes([original[0] ^ 0xFF]))
            for _ in range(6):
                assert await read(store, "corrupt", "small") == small
                assert await read(store, "corrupt", "large") == large
            await nodes.agents_here("object-auditor")
            for name in ("small", "large"):
                name_hash = store.rings.object.hash_path(ACCOUNT, "corrupt", name)
                assert len(list(nodes.devices.glob(f"*/quarantined/objects/{name_hash}*"))) == 1
            await nodes.agents_here("object-replicator")
            for name, data in (("small", small), ("large", large)):
                assert len(nodes.replicas_on_disk(store, ACCOUNT, "corrupt", name)) == 3
                assert await read(store, "corrupt", name) == data
        finally:
            await cluster.close()

    asyncio.run(scenario())


def test_stopped_node_writes_and_reads_go_on_and_listing_catches_up(nodes: NodeSet) -> None:
    async def scenario() -> None:
        cluster, store = nodes.store()
        try:
            await store.write_container("PUT", ACCOUNT, "stopped", {})
            before = {f"before{i}": os.urandom(1000 + i) for i in range(10)}
            for name, data in before.items():
                assert await put(store, "stopped", name, data) == 201
            nodes.kill(1)
            after = {f"after{i}": os.urandom(2000 + i) for i in range(10)}
            for name, data in after.items():
                assert await put(store, "stopped", name, data) == 201
            for name, data in {**before, **after}.items():
                assert await read(store, "stopped", name) == data
            status, rows, _ = await store.list_objects(ACCOUNT, "stopped")
            assert status == 200 and {r["name"] for r in rows} == {*before, *after}
            nodes.start(1)
            await nodes.agents_here("object-updater", "container-replicator", "object-replicator")
            # Every replica of the container, the returned node's included, lists all.
            part, primaries = store.rings.container.get_nodes(ACCOUNT, "stopped")
            for dev in primaries:
                response = await cluster.backend(dev).request(
                    "GET", dev.device, part, (ACCOUNT, "stopped", ""), {}
                )
                import json

                names = {row["name"] for row in json.loads(await response.read())}
                assert names == {*before, *after}, dev.describe()
            for name in after:
                assert len(nodes.replicas_on_disk(store, ACCOUNT, "stopped", name)) >= 3
        finally:
            await cluster.close()

    asyncio.run(scenario())


def test_crash_mid_upload_never_shows_a_partial_object(nodes: NodeSet) -> None:
    async def scenario() -> None:
        cluster, store = nodes.store()
        try:
            await store.write_container("PUT", ACCOUNT, "crash", {})
            old = os.urandom(300_000)
            assert await put(store, "crash", "doc", old) == 201
            new_part = os.urandom(1024 * 1024)

            async def endless() -> AsyncIterator[bytes]:
                for count in range(64):
                    if count == 8:
                        for index in list(nodes.processes):
                            nodes.kill(index)
                    yield new_part
                    await asyncio.sleep(0.01)

            status, _ = await store.put_object(
                ACCOUNT, "crash", "doc", {"content-length": str(64 * len(new_part))}, endless()
            )
            assert status >= 500
            status, _ = await store.put_object(
                ACCOUNT, "crash", "fresh", {"content-length": str(64 * len(new_part))}, endless()
            )
            assert status >= 500
            nodes.start_all()
            assert await read(store, "crash", "doc") == old
            assert await read(store, "crash", "fresh") is None
            status, rows, _ = await store.list_objects(ACCOUNT, "crash")
            assert [r["name"] for r in rows] == ["doc"]
            assert rows[0]["etag"] == hashlib.md5(old).hexdigest()
        finally:
            await cluster.close()

    asyncio.run(scenario())
