"""The object server: object files on this node's devices, and the updates their writes cause.

A successful PUT or DELETE tells one replica of the container (named by the
proxy in ``X-Container-Host/-Device/-Partition``) about the new listing row; when
that container server cannot be reached the update is saved as an *async
pending* file on the object's device for the object updater to retry. Objects
with ``X-Delete-At`` are likewise queued in the hidden ``.expiring_objects``
account for the expirer.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from onestack.object import timestamps
from onestack.object.cluster import Cluster
from onestack.object.storage.backend import (
    SHARED_DIGEST_HEADER,
    BackendResponse,
    SharedDigest,
    error,
)
from onestack.object.storage.diskfile import (
    BLOCK,
    CRC_KEY,
    ContentDigest,
    DiskError,
    DiskReader,
    DiskWriter,
    ObjectDisk,
    ensure_dirs,
)

if TYPE_CHECKING:
    from onestack.object.storage.node import StorageNode

log = logging.getLogger(__name__)

EXPIRING_ACCOUNT = ".expiring_objects"
EXPIRING_DIVISOR = 86400
WRITE_BATCH = 1 << 20
KEPT_HEADERS = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-delete-at",
    "x-object-manifest",
    "x-static-large-object",
)
KEPT_PREFIXES = ("x-object-meta-", "x-object-sysmeta-", "x-object-transient-sysmeta-")
POST_PREFIXES = ("x-object-meta-", "x-object-transient-sysmeta-")
HIDDEN = ("name", CRC_KEY, "x-meta-timestamp")


def user_metadata(headers: dict[str, str], *, post: bool = False) -> dict[str, str]:
    """The headers an object keeps: content headers and metadata (user and system)."""
    kept = {}
    for key, value in headers.items():
        if post:
            if (
                key.startswith(POST_PREFIXES)
                or key in ("x-delete-at",)
                or key.startswith("x-object-sysmeta-")
            ):
                kept[key] = value
        elif key in KEPT_HEADERS or key.startswith(KEPT_PREFIXES):
            kept[key] = value
    return kept


def response_headers(metadata: dict[str, Any]) -> dict[str, str]:
    from onestack.object.storage.node import http_date

    headers = {k: str(v) for k, v in metadata.items() if k not in HIDDEN}
    modified = max(metadata["x-timestamp"], metadata.get("x-meta-timestamp", "0"))
    headers["last-modified"] = http_date(float(modified))
    headers["x-backend-timestamp"] = metadata["x-timestamp"]
    headers["x-backend-data-timestamp"] = metadata["x-timestamp"]
    headers.setdefault("content-type", "application/octet-stream")
    return headers


def expired(metadata: dict[str, Any]) -> bool:
    delete_at = metadata.get("x-delete-at")
    try:
        return delete_at is not None and int(delete_at) <= time.time()
    except ValueError:
        return False


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range resolved to ``[start, end)``; None when unsatisfiable."""
    spec = value.split("=", 1)[1].strip()
    first, _, last = spec.partition("-")
    if not first:
        length = int(last)
        if length == 0:
            return None
        return max(0, size - length), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return None
    return start, end


class ObjectServer:
    """Object verbs on one node: PUT, GET, HEAD, POST, DELETE and replication."""

    def __init__(self, node: StorageNode):
        self.node = node
        self.disk = ObjectDisk(node.devices_dir, node.reclaim_age)

    @property
    def cluster(self) -> Cluster:
        return self.node.cluster

    def name_hash(self, path: tuple[str, str, str]) -> str:
        return str(self.cluster.rings.object.hash_path(*path))

    async def handle(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse:
        try:
            if method == "PUT":
                return await self.put(device, part, path, headers, body)
            if method in ("GET", "HEAD"):
                return await self.get(device, part, path, headers, head=method == "HEAD")
            if method == "POST":
                return await self.post(device, part, path, headers)
            if method == "DELETE":
                return await self.delete(device, part, path, headers)
        except DiskError as exc:
            return error(exc.status, f"{type(exc).__name__}: {exc}")
        return error(405, method)

    # -- PUT ------------------------------------------------------------------------------

    async def put(
        self,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
    ) -> BackendResponse:
        try:
            timestamp = timestamps.normalize(headers["x-timestamp"])
        except (KeyError, ValueError):
            return error(400, "missing or invalid X-Timestamp")
        replication = "x-backend-replication" in headers
        if replication:
            metadata = json.loads(headers["x-backend-metadata"])
            expected_etag = metadata.get("etag")
        else:
            metadata = user_metadata(headers)
            expected_etag = headers.get("etag")
        metadata["name"] = "/" + "/".join(path)
        length_header = headers.get("content-length")
        expected_length = int(length_header) if length_header is not None else None
        name_hash = self.name_hash(path)
        run = self.cluster.run

        # Check the device and the newest timestamp before taking any byte: a node that
        # cannot write answers at once, and the proxy picks a handoff in its place.
        shared = SharedDigest.registry.get(headers.get(SHARED_DIGEST_HEADER, ""))
        writer: DiskWriter | None = await run(
            functools.partial(
                self.disk.create, device, part, name_hash, timestamp, hashing=shared is None
            )
        )
        assert writer is not None
        buffer = bytearray()
        received = 0
        try:
            try:
                async for chunk in body:
                    received += len(chunk)
                    assert writer is not None
                    if not buffer and len(chunk) >= WRITE_BATCH:
                        # A proxy's batch is already big enough: written as it is, no copy.
                        await run(writer.write, chunk)
                        continue
                    buffer += chunk
                    if len(buffer) >= WRITE_BATCH:
                        await run(writer.write, bytes(buffer))
                        buffer.clear()
            except DiskError:
                raise
            except Exception as exc:
                return error(499, f"upload stopped: {type(exc).__name__}")
            if expected_length is not None and received != expected_length:
                return error(499, "client sent less than its Content-Length")
            assert writer is not None
            computed = shared.complete if shared is not None else None
            etag = await run(self._finish, writer, bytes(buffer), metadata, expected_etag, computed)
            writer = None
        finally:
            if writer is not None:
                await run(writer.abort)
        if not replication:
            size = received
            await self.update_container(
                "PUT", device, path, headers, timestamp, size, metadata.get("content-type"), etag
            )
            await self.update_expirer(
                device, part, path, None, metadata.get("x-delete-at"), timestamp
            )
        return BackendResponse(201, {"etag": etag, "x-timestamp": timestamp})

    def _finish(
        self,
        writer: DiskWriter,
        data: bytes,
        metadata: dict[str, Any],
        expected_etag: str | None,
        computed: ContentDigest | None = None,
    ) -> str:
        try:
            if data:
                writer.write(data)
            return writer.commit(metadata, expected_etag, computed)
        except BaseException:
            writer.abort()
            raise

    # -- GET / HEAD -----------------------------------------------------------------------

    async def get(
        self,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        *,
        head: bool,
    ) -> BackendResponse:
        opened = await self.cluster.run(self.disk.open, device, part, self.name_hash(path))
        if not isinstance(opened, DiskReader):
            out = {}
            if opened.timestamp:
                out["x-backend-timestamp"] = opened.timestamp
            return BackendResponse(404, out)
        reader = opened
        metadata = reader.metadata
        if expired(metadata) and "x-backend-replication" not in headers:
            await self.cluster.run(reader.close)
            return BackendResponse(404, {"x-backend-timestamp": reader.timestamp})
        out = response_headers(metadata)
        if "x-backend-replication" in headers:
            out["x-backend-metadata"] = json.dumps(
                {k: v for k, v in metadata.items() if k not in (CRC_KEY, "x-meta-timestamp")}
            )
        start, end, status = 0, reader.size, 200
        range_header = headers.get("range")
        if range_header:
            try:
                resolved = parse_range(range_header, reader.size)
            except (ValueError, IndexError):
                resolved = (0, reader.size)
            if resolved is None:
                await self.cluster.run(reader.close)
                return BackendResponse(416, {**out, "content-range": f"bytes */{reader.size}"})
            start, end = resolved
            status = 206
            out["content-range"] = f"bytes {start}-{end - 1}/{reader.size}"
        out["content-length"] = str(end - start)
        if head:
            await self.cluster.run(reader.close)
            return BackendResponse(200, out)
        if end - start <= BLOCK:
            # Small: read and verify before answering, so a corrupt replica is a clean 404.
            try:
                data = await self.cluster.run(lambda: b"".join(reader.read_range(start, end)))
            except DiskError as exc:
                return error(exc.status, f"{type(exc).__name__}")
            finally:
                await self.cluster.run(reader.close)
            return BackendResponse(status, out, _once(data))
        return BackendResponse(status, out, self._stream(reader, start, end))

    async def _stream(self, reader: DiskReader, start: int, end: int) -> AsyncIterator[bytes]:
        blocks = reader.read_range(start, end)
        try:
            while True:
                piece = await self.cluster.run(next, blocks, None)
                if piece is None:
                    return
                yield piece
        finally:
            await self.cluster.run(reader.close)

    # -- POST / DELETE --------------------------------------------------------------------

    async def post(
        self, device: str, part: int, path: tuple[str, str, str], headers: dict[str, str]
    ) -> BackendResponse:
        try:
            timestamp = timestamps.normalize(headers["x-timestamp"])
        except (KeyError, ValueError):
            return error(400, "missing or invalid X-Timestamp")
        name_hash = self.name_hash(path)
        opened = await self.cluster.run(self.disk.open, device, part, name_hash)
        if not isinstance(opened, DiskReader):
            return BackendResponse(404, {"x-backend-timestamp": opened.timestamp or ""})
        old_metadata = opened.metadata
        await self.cluster.run(opened.close)
        if "x-backend-replication" in headers:
            update = json.loads(headers["x-backend-metadata"])
        else:
            if expired(old_metadata):
                return BackendResponse(404, {})
            update = user_metadata(headers, post=True)
            for key, value in old_metadata.items():
                if key.startswith("x-object-sysmeta-") and key not in update:
                    update[key] = value
        update["x-timestamp"] = timestamp
        await self.cluster.run(
            self.disk.write_marker, device, part, name_hash, timestamp, "meta", update
        )
        if "x-backend-replication" not in headers:
            await self.update_expirer(
                device,
                part,
                path,
                old_metadata.get("x-delete-at"),
                update.get("x-delete-at"),
                timestamp,
            )
        return BackendResponse(202, {})

    async def delete(
        self, device: str, part: int, path: tuple[str, str, str], headers: dict[str, str]
    ) -> BackendResponse:
        try:
            timestamp = timestamps.normalize(headers["x-timestamp"])
        except (KeyError, ValueError):
            return error(400, "missing or invalid X-Timestamp")
        name_hash = self.name_hash(path)
        opened = await self.cluster.run(self.disk.open, device, part, name_hash)
        existed = isinstance(opened, DiskReader)
        old_metadata: dict[str, Any] = {}
        if isinstance(opened, DiskReader):
            old_metadata = opened.metadata
            await self.cluster.run(opened.close)
        if_delete_at = headers.get("x-if-delete-at")
        if if_delete_at is not None and old_metadata.get("x-delete-at") != if_delete_at:
            return BackendResponse(412, {})
        await self.cluster.run(
            self.disk.write_marker,
            device,
            part,
            name_hash,
            timestamp,
            "ts",
            {"x-timestamp": timestamp, "name": "/" + "/".join(path)},
        )
        if "x-backend-replication" not in headers:
            await self.update_container("DELETE", device, path, headers, timestamp)
            await self.update_expirer(
                device, part, path, old_metadata.get("x-delete-at"), None, timestamp
            )
        if existed and (if_delete_at is not None or not expired(old_metadata)):
            return BackendResponse(204, {"x-backend-timestamp": timestamp})
        return BackendResponse(404, {"x-backend-timestamp": timestamp})

    # -- updates to other servers ---------------------------------------------------------

    async def update_container(
        self,
        op: str,
        device: str,
        path: tuple[str, str, str],
        headers: dict[str, str],
        timestamp: str,
        size: int = 0,
        content_type: str | None = None,
        etag: str | None = None,
    ) -> None:
        host = headers.get("x-container-host")
        if not host:
            return
        update = {"x-timestamp": timestamp}
        if op == "PUT":
            update.update(
                {
                    "x-size": str(
                        headers.get("x-object-sysmeta-container-update-override-size", size)
                    ),
                    "x-content-type": content_type or "application/octet-stream",
                    "x-etag": headers.get(
                        "x-object-sysmeta-container-update-override-etag", etag or ""
                    ),
                }
            )
        await self.send_update(
            device,
            op,
            host,
            headers.get("x-container-device", ""),
            int(headers.get("x-container-partition", "0")),
            path,
            update,
        )

    async def update_expirer(
        self,
        device: str,
        part: int,
        path: tuple[str, str, str],
        old_at: str | None,
        new_at: str | None,
        timestamp: str,
    ) -> None:
        """Queue the object for the expirer; drop the entry a changed X-Delete-At left behind.

        Like container updates, each object replica tells one replica of the queue
        container (the one at its own position among the object's primaries).
        """
        if old_at == new_at:
            return
        rings = self.cluster.rings
        primaries = rings.object.get_part_nodes(part)
        index = next((i for i, d in enumerate(primaries) if d.device == device), 0)
        for op, delete_at in (("DELETE", old_at), ("PUT", new_at)):
            if not delete_at:
                continue
            queue = expiring_container(int(delete_at))
            queue_part, nodes = rings.container.get_nodes(EXPIRING_ACCOUNT, queue)
            node = nodes[index % len(nodes)]
            entry = (EXPIRING_ACCOUNT, queue, f"{delete_at}-{'/'.join(path)}")
            update = {"x-timestamp": timestamp}
            if op == "PUT":
                update.update({"x-size": "0", "x-content-type": "text/plain", "x-etag": ""})
            await self.send_update(device, op, node.address, node.device, queue_part, entry, update)

    async def send_update(
        self,
        object_device: str,
        op: str,
        host: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
    ) -> None:
        """Tell a container server about a row; keep it as async pending when it cannot hear."""
        from onestack.object.storage.backend import with_timeout

        try:
            sent = {**headers, "x-backend-kind": "container"}
            response = await with_timeout(
                self.cluster.backend(host).request(op, device, part, path, sent),
                self.cluster.node_timeout,
            )
            await response.close()
            if response.ok:
                return
        except Exception:
            log.exception("container update to %s failed", host)
        await self.cluster.run(
            self.save_async_pending,
            object_device,
            {
                "op": op,
                "host": host,
                "device": device,
                "part": part,
                "path": path,
                "headers": headers,
            },
        )

    def save_async_pending(self, device: str, update: dict[str, Any]) -> None:
        try:
            directory, _ = ensure_dirs(self.node.devices_dir / device, "async_pending")
        except DiskError:
            log.warning("lost a container update: device %s is gone", device)
            return
        name = f"{update['headers']['x-timestamp']}-{uuid.uuid4().hex}"
        tmp = directory / f".{name}"
        tmp.write_text(json.dumps(update))
        os.replace(tmp, directory / name)

    # -- replication ----------------------------------------------------------------------

    async def replicate(
        self, device: str, part: int, headers: dict[str, str], body: AsyncIterator[bytes]
    ) -> BackendResponse:
        """Partition-level questions from a replicator: suffix hashes and their contents."""
        raw = b"".join([chunk async for chunk in body])
        try:
            request = json.loads(raw or b"{}")
            if request.get("op") == "hashes":
                result: Any = await self.cluster.run(
                    self.disk.suffix_hashes, device, part, request.get("recalculate", [])
                )
            elif request.get("op") == "contents":
                result = await self.cluster.run(
                    self.disk.suffix_contents, device, part, request["suffixes"]
                )
            else:
                return error(400, "unknown replicate op")
        except DiskError as exc:
            return error(exc.status, str(exc))
        return BackendResponse(
            200, {"content-type": "application/json"}, _once(json.dumps(result).encode())
        )


def expiring_container(delete_at: int) -> str:
    return str(delete_at // EXPIRING_DIVISOR * EXPIRING_DIVISOR)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data
