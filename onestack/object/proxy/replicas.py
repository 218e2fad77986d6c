"""Talking to the replicas of one name: quorum writes, streamed uploads, reads that fail over.

*Writes* go to every primary of the partition; a primary that cannot take the
request (device gone, node down, timeout) is replaced by the next handoff, and
the answer is the status a majority agrees on (Swift's ``best_response``).
An upload streams the client's body to all its replicas at once through small
bounded queues, so memory stays flat whatever the size. A node counts as
connected once it pulls the first chunk (it has checked its device and that
no newer write exists — the in-process equivalent of ``100 Continue``).

*Reads* try primaries, then handoffs, until one answers; when a replica fails
in the middle of a body (a corrupt block, a node that dies), the read resumes
from the next replica at the same offset, after checking it holds the same
version.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field

from onestack.object.cluster import Cluster
from onestack.object.ring import Device, Ring
from onestack.object.storage.backend import (
    SHARED_DIGEST_HEADER,
    BackendResponse,
    Body,
    SharedDigest,
    error,
    with_timeout,
)

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4
# Client chunks (64 KiB from the HTTP server) are gathered into batches this big before
# they go to the replicas: fewer hand-offs between tasks and threads per byte.
UPLOAD_BATCH = 1 << 20
POST_QUORUM_TIMEOUT = 0.5
CONNECT_TIMEOUT = 5.0


class BodyAborted(Exception):
    """The client's upload stopped; every replica drops what it received."""


class UploadFailed(Exception):
    """Too few replicas took the upload."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def quorum_size(replicas: int) -> int:
    return replicas // 2 + 1


def best_status(statuses: list[int], replicas: int) -> int:
    """The status class a majority of ``replicas`` agrees on; 503 when none does."""
    quorum = quorum_size(replicas)
    for klass in (2, 3, 4):
        members = [s for s in statuses if s // 100 == klass]
        if len(members) >= quorum:
            return Counter(members).most_common(1)[0][0]
    if statuses.count(404) + sum(1 for s in statuses if s // 100 == 2) >= quorum:
        return 404
    return 503


def failed(response: BackendResponse) -> bool:
    """Whether the node could not do the work (as opposed to answering no)."""
    return response.status >= 500 or response.status == 499


@dataclass
class Target:
    """A node and the headers meant for it."""

    device: Device
    headers: dict[str, str] = field(default_factory=dict)


def node_walk(
    ring: Ring, part: int, primaries: list[Device], handoffs: int | None = None
) -> Iterator[Device]:
    """Primaries, then (a bounded number of) handoffs."""
    more = ring.get_more_nodes(part)
    limit = handoffs if handoffs is not None else len(primaries) * 2
    return itertools.chain(primaries, itertools.islice(more, limit))


class Replicas:
    """Fan-out and failover over the nodes of one cluster."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    async def _one(
        self,
        dev: Device,
        method: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: Body = None,
        query: dict[str, str] | None = None,
    ) -> BackendResponse:
        backend = self.cluster.backend(dev)
        try:
            return await with_timeout(
                backend.request(method, dev.device, part, path, headers, body, query),
                self.cluster.node_timeout,
            )
        except Exception as exc:
            log.exception("%s %s on %s failed", method, "/".join(path), dev.describe())
            return error(503, f"{type(exc).__name__}")

    async def write(
        self,
        ring: Ring,
        part: int,
        method: str,
        path: tuple[str, str, str],
        headers_for: Callable[[int], dict[str, str]],
        body: bytes | None = None,
    ) -> tuple[int, list[BackendResponse]]:
        """Send a small request to every replica (handoffs for failed ones); quorum status."""
        primaries = ring.get_part_nodes(part)
        handoffs = ring.get_more_nodes(part)
        lock = asyncio.Lock()

        async def replica(index: int, dev: Device) -> BackendResponse:
            headers = headers_for(index)
            response = await self._one(dev, method, part, path, headers, body)
            while failed(response):
                async with lock:
                    nxt = next(handoffs, None)
                if nxt is None:
                    return response
                await response.close()
                response = await self._one(nxt, method, part, path, headers, body)
            return response

        responses = await asyncio.gather(*(replica(i, d) for i, d in enumerate(primaries)))
        for response in responses:
            await response.close()
        return best_status([r.status for r in responses], ring.replicas), list(responses)

    async def read(
        self,
        ring: Ring,
        part: int,
        method: str,
        path: tuple[str, str, str],
        headers: dict[str, str],
        query: dict[str, str] | None = None,
        *,
        accept: Callable[[BackendResponse], bool] = lambda r: r.ok,
    ) -> tuple[BackendResponse, Iterator[Device]]:
        """The first acceptable answer among primaries then handoffs, and the nodes left."""
        walk = node_walk(ring, part, ring.get_part_nodes(part))
        statuses: list[int] = []
        not_found: BackendResponse | None = None
        for dev in walk:
            response = await self._one(dev, method, part, path, headers, query=query)
            if accept(response):
                return response, walk
            statuses.append(response.status)
            if response.status == 404 and (
                not_found is None
                or response.headers.get("x-backend-timestamp", "")
                > not_found.headers.get("x-backend-timestamp", "")
            ):
                not_found = response
            else:
                await response.close()
        if not_found is not None:
            return not_found, walk
        if statuses and all(s < 500 for s in statuses):
            return BackendResponse(statuses[0]), walk
        return error(503, "no replica answered"), walk

    def resuming_body(
        self,
        first: BackendResponse,
        rest: Iterator[Device],
        part: int,
        path: tuple[str, str, str],
        start: int,
        end: int,
    ) -> AsyncIterator[bytes]:
        """The body of ``first``; if it breaks, the remainder from the next replica."""
        version = first.headers.get("x-backend-data-timestamp")

        async def chunks() -> AsyncIterator[bytes]:
            response = first
            position = start
            try:
                while True:
                    try:
                        assert response.body is not None
                        async for chunk in response.body:
                            position += len(chunk)
                            yield chunk
                        if position >= end:
                            return
                        raise ConnectionError("replica body ended early")
                    except (Exception, asyncio.CancelledError) as exc:
                        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                            raise
                        log.warning("read of %s broke at %d: %s", "/".join(path), position, exc)
                        await response.close()
                        response = await self._resume(rest, part, path, position, end, version)
            finally:
                await response.close()

        return chunks()

    async def _resume(
        self,
        rest: Iterable[Device],
        part: int,
        path: tuple[str, str, str],
        position: int,
        end: int,
        version: str | None,
    ) -> BackendResponse:
        for dev in rest:
            headers = {"range": f"bytes={position}-{end - 1}"}
            response = await self._one(dev, "GET", part, path, headers)
            if response.ok and response.headers.get("x-backend-data-timestamp") == version:
                return response
            await response.close()
        raise ConnectionError("no replica left to continue the read")

    async def upload(
        self,
        ring: Ring,
        part: int,
        path: tuple[str, str, str],
        targets: list[dict[str, str]],
        body: AsyncIterator[bytes],
    ) -> list[BackendResponse]:
        """Stream ``body`` to one node per entry of ``targets`` (primaries, handoffs as needed).

        Raises :class:`UploadFailed` when fewer than a quorum took it.
        """
        handoffs = ring.get_more_nodes(part)
        lock = asyncio.Lock()
        shared: SharedDigest | None = None
        if all(d.address in self.cluster.local for d in ring.get_part_nodes(part)):
            shared = SharedDigest()
            targets = [{**t, SHARED_DIGEST_HEADER: shared.id} for t in targets]
        try:
            return await self._upload(ring, part, path, targets, body, shared, handoffs, lock)
        finally:
            if shared is not None:
                shared.close()

    async def _upload(
        self,
        ring: Ring,
        part: int,
        path: tuple[str, str, str],
        targets: list[dict[str, str]],
        body: AsyncIterator[bytes],
        shared: SharedDigest | None,
        handoffs: Iterator[Device],
        lock: asyncio.Lock,
    ) -> list[BackendResponse]:
        quorum = quorum_size(ring.replicas)
        walk_primaries = ring.get_part_nodes(part)
        first = await _first_chunk(body)

        async def connect(index: int) -> Feed | None:
            dev: Device | None = walk_primaries[index] if index < len(walk_primaries) else None
            while dev is not None:
                feed = Feed(self, dev, part, path, targets[index])
                if await feed.connect():
                    return feed
                async with lock:
                    dev = next(handoffs, None)
            return None

        connected = await asyncio.gather(*(connect(i) for i in range(len(targets))))
        feeds = [f for f in connected if f is not None]
        if len(feeds) < quorum:
            await asyncio.gather(*(f.abort() for f in feeds))
            raise UploadFailed(503, f"only {len(feeds)} replicas could take the upload")
        batches_sent = 0
        last_batch = b""
        hashing: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batch_size = 0

        async def flush() -> None:
            """Hand one batch to every live replica while the previous one is still hashing."""
            nonlocal batches_sent, last_batch, hashing, batch_size
            # Joined off the event loop: a join this big releases the GIL, and winning it back
            # from the disk threads would stall the socket reads.
            data = batch[0] if len(batch) == 1 else await self.cluster.run(b"".join, batch)
            batch.clear()
            batch_size = 0
            live = [f for f in feeds if not f.failed]
            if len(live) < quorum:
                raise UploadFailed(503, "too many replicas failed during the upload")
            if shared is not None:
                if hashing is not None:
                    await hashing
                hashing = asyncio.ensure_future(self.cluster.run(shared.digest.update, data))
            await asyncio.gather(*(f.send(data) for f in live))
            batches_sent += 1
            last_batch = data

        try:
            chunk = first
            while chunk is not None:
                batch.append(chunk)
                batch_size += len(chunk)
                if batch_size >= UPLOAD_BATCH:
                    await flush()
                chunk = await _next_chunk(body)
            if batch or batches_sent == 0:
                await flush()
            if hashing is not None:
                await hashing
        except BaseException:
            if hashing is not None:
                await asyncio.gather(hashing, return_exceptions=True)
            await asyncio.gather(*(f.abort() for f in feeds), return_exceptions=True)
            raise
        if shared is not None:
            shared.complete = shared.digest
        await asyncio.gather(*(f.finish() for f in feeds))
        results = await _collect(feeds, quorum)
        if batches_sent <= 1:
            # A body of one batch is still in hand: a replica that failed late gets a handoff.
            for index, (feed, result) in enumerate(zip(feeds, results, strict=True)):
                while failed(result):
                    async with lock:
                        dev = next(handoffs, None)
                    if dev is None:
                        break
                    result = await self._one(dev, "PUT", part, path, feed.headers, last_batch)
                results[index] = result
        return results


async def _first_chunk(body: AsyncIterator[bytes]) -> bytes | None:
    return await _next_chunk(body)


async def _next_chunk(body: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await body.__anext__()
    except StopAsyncIteration:
        return None


async def _collect(feeds: list[Feed], quorum: int) -> list[BackendResponse]:
    """Wait for every replica's answer, but not long for stragglers once a quorum answered."""
    tasks = [f.task for f in feeds if f.task is not None]
    done, pending = await asyncio.wait(tasks, timeout=None, return_when=asyncio.FIRST_COMPLETED)
    while pending:
        good = sum(1 for t in done if not t.cancelled() and t.result().ok)
        timeout = POST_QUORUM_TIMEOUT if good >= quorum else None
        more, pending = await asyncio.wait(
            pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not more:
            for task in pending:
                task.cancel()
            break
        done |= more
    results = []
    for task in tasks:
        if task.done() and not task.cancelled():
            results.append(task.result())
        else:
            results.append(error(504, "replica did not finish in time"))
    return results


class Feed:
    """One replica of an upload: a bounded queue the node pulls from in its own task."""

    def __init__(
        self,
        replicas: Replicas,
        dev: Device,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
    ):
        self.replicas = replicas
        self.dev = dev
        self.part = part
        self.path = path
        self.headers = headers
        self.queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUE_DEPTH)
        self.started = asyncio.Event()
        self.task: asyncio.Task[BackendResponse] | None = None

    async def _body(self) -> AsyncIterator[bytes]:
        self.started.set()
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def connect(self) -> bool:
        """Start the request; True once the node asks for the body."""
        self.task = asyncio.create_task(
            self.replicas._one(self.dev, "PUT", self.part, self.path, self.headers, self._body())
        )
        waiter = asyncio.create_task(self.started.wait())
        await asyncio.wait(
            [self.task, waiter], timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if self.started.is_set() and not self.task.done():
            return True
        if self.task.done():
            if self.started.is_set() and self.task.result().ok:
                return True
            with contextlib.suppress(Exception):
                await self.task.result().close()
            return False
        self.task.cancel()
        return False

    @property
    def failed(self) -> bool:
        return self.task is not None and self.task.done()

    async def send(self, chunk: bytes) -> None:
        assert self.task is not None
        if self.task.done():
            return
        if not self.queue.full():
            self.queue.put_nowait(chunk)
            return
        put = asyncio.create_task(self.queue.put(chunk))
        await asyncio.wait([put, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()

    async def finish(self) -> None:
        await self.send_marker(None)

    async def abort(self) -> None:
        await self.send_marker(BodyAborted())
        if self.task is not None:
            with contextlib.suppress(BaseException):
                response = await asyncio.wait_for(asyncio.shield(self.task), 5)
                await response.close()

    async def send_marker(self, marker: BaseException | None) -> None:
        if self.task is None or self.task.done():
            return
        put = asyncio.create_task(self.queue.put(marker))
        await asyncio.wait([put, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
