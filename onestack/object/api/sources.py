"""Reading an object as clients see it: plain, or assembled from segments (SLO and DLO).

A *source* knows an object's size, ETag and headers and can stream any byte
range of it. Plain objects read their range from the replicas; large objects
map the range onto their segments (a Static Large Object's manifest, or the
listing under a Dynamic Large Object's prefix), nested manifests included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from onestack.object.api.errors import SwiftError
from onestack.object.proxy.store import ObjectResponse, Store

MAX_DEPTH = 10


@dataclass
class Segment:
    container: str
    obj: str
    size: int
    etag: str
    first: int = 0
    length: int | None = None

    @property
    def span(self) -> int:
        return self.length if self.length is not None else self.size - self.first


@dataclass
class Source:
    """One object as the client sees it."""

    store: Store
    account: str
    container: str
    obj: str
    size: int
    etag: str
    headers: dict[str, str]
    segments: list[Segment] | None = None
    first: ObjectResponse | None = None
    depth: int = 0
    large: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    first_span: tuple[int, int] | None = None

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the object."""
        if self.segments is None:
            return await self._read_plain(start, end)
        return self._read_segments(start, end)

    async def _read_plain(self, start: int, end: int) -> AsyncIterator[bytes]:
        first, self.first = self.first, None
        if first is not None and first.body is not None and self.first_span == (start, end):
            return first.body
        if first is not None:
            await first.close()
        if end <= start:
            return _nothing()
        response = await self.store.get_object(
            self.account, self.container, self.obj, headers={"range": f"bytes={start}-{end - 1}"}
        )
        if response.status not in (200, 206) or response.body is None:
            await response.close()
            raise SwiftError(503)
        return response.body

    async def _read_segments(self, start: int, end: int) -> AsyncIterator[bytes]:
        assert self.segments is not None
        if self.first is not None:
            await self.first.close()
            self.first = None
        offset = 0
        for segment in self.segments:
            seg_start, seg_end = offset, offset + segment.span
            offset = seg_end
            if seg_end <= start or seg_start >= end:
                continue
            inner_start = segment.first + max(start, seg_start) - seg_start
            inner_end = segment.first + min(end, seg_end) - seg_start
            source = await open_source(
                self.store, self.account, segment.container, segment.obj, depth=self.depth + 1
            )
            if source is None:
                raise ConnectionError(f"segment {segment.container}/{segment.obj} is missing")
            if source.etag.strip('"') != segment.etag.strip('"') and segment.etag:
                if source.first is not None:
                    await source.first.close()
                raise ConnectionError(f"segment {segment.container}/{segment.obj} changed")
            async for chunk in await source.read(inner_start, inner_end):
                yield chunk

    async def close(self) -> None:
        if self.first is not None:
            await self.first.close()
            self.first = None


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


def segment_etag(segments: list[Segment]) -> str:
    """ETag of a large object: MD5 of its segments' ETags (with ranges for SLO)."""
    md5 = hashlib.md5(usedforsecurity=False)
    for segment in segments:
        if segment.length is not None or segment.first:
            md5.update(
                f"{segment.etag}:{segment.first}-{segment.first + segment.span - 1};".encode()
            )
        else:
            md5.update(segment.etag.encode())
    return md5.hexdigest()


def parse_manifest(raw: bytes) -> list[Segment]:
    """The stored SLO manifest (Swift's internal format) as segments."""
    entries = json.loads(raw)
    segments = []
    for entry in entries:
        container, _, obj = entry["name"].lstrip("/").partition("/")
        first, length = 0, None
        if entry.get("range"):
            a, _, b = entry["range"].partition("-")
            first, length = int(a), int(b) - int(a) + 1
        segments.append(Segment(container, obj, int(entry["bytes"]), entry["hash"], first, length))
    return segments


async def open_source(
    store: Store,
    account: str,
    container: str,
    obj: str,
    *,
    headers: dict[str, str] | None = None,
    manifest_raw: bool = False,
    depth: int = 0,
) -> Source | None:
    """Open an object for reading; None when it does not exist."""
    if depth > MAX_DEPTH:
        raise SwiftError(
            409, "Max recursion depth exceeded on large object", content_type="text/plain"
        )
    response = await store.get_object(account, container, obj, headers=headers)
    if response.status == 404:
        return None
    if response.status == 416 and headers and "range" in headers:
        return await open_source(
            store, account, container, obj, depth=depth, manifest_raw=manifest_raw
        )
    if not 200 <= response.status < 300:
        await response.close()
        raise SwiftError(503 if response.status >= 500 else response.status)
    backend = response.headers
    size = int(backend["content-length"])
    span = (0, size)
    if response.status == 206:
        spec, _, total = backend["content-range"].split()[1].partition("/")
        first_byte, _, last_byte = spec.partition("-")
        size, span = int(total), (int(first_byte), int(last_byte) + 1)
    source = Source(
        store,
        account,
        container,
        obj,
        size,
        backend.get("etag", ""),
        backend,
        first=response,
        depth=depth,
        first_span=span,
    )
    if manifest_raw:
        return source
    if backend.get("x-static-large-object", "").lower() in ("true", "1", "yes"):
        if response.status == 206:
            await response.close()
            return await open_source(store, account, container, obj, depth=depth)
        raw = await response.read()
        source.first = None
        source.segments = parse_manifest(raw)
        source.size = sum(s.span for s in source.segments)
        source.etag = f'"{segment_etag(source.segments)}"'
        source.large = "slo"
        source.notes["manifest"] = raw
    elif "x-object-manifest" in backend:
        await response.close()
        source.first = None
        segment_container, _, prefix = unquote(backend["x-object-manifest"]).partition("/")
        segments = [
            Segment(segment_container, row["name"], int(row["size"]), row["etag"])
            async for row in store.iter_objects(account, segment_container, prefix)
        ]
        source.segments = segments
        source.size = sum(s.size for s in segments)
        source.etag = f'"{segment_etag(segments)}"'
        source.large = "dlo"
    return source
