"""Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since)
and byte ranges, single and multiple, as Swift answers them."""

from __future__ import annotations

import email.utils
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from onestack.object.api.errors import SwiftError

MAX_RANGES = 50


def _etags(value: str) -> list[str]:
    return [v.strip().removeprefix("W/").strip('"') for v in value.split(",") if v.strip()]


def _parse_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed is not None else None


def check_conditions(
    headers: dict[str, str], etag: str, last_modified: float, *, reading: bool
) -> int | None:
    """The status to answer instead of the object (304 or 412), or None to go on."""
    etag = etag.strip('"')
    if_match = headers.get("if-match")
    if if_match is not None:
        wanted = _etags(if_match)
        if "*" not in wanted and etag not in wanted:
            return 412
    if_none = headers.get("if-none-match")
    if if_none is not None:
        wanted = _etags(if_none)
        if "*" in wanted or etag in wanted:
            return 304 if reading else 412
    modified = math.ceil(last_modified)
    if if_none is None and reading and "if-modified-since" in headers:
        since = _parse_date(headers["if-modified-since"])
        if since is not None and modified <= since:
            return 304
    if if_match is None and "if-unmodified-since" in headers:
        since = _parse_date(headers["if-unmodified-since"])
        if since is not None and modified > since:
            return 412
    return None


def parse_ranges(value: str | None) -> list[tuple[int | None, int | None]] | None:
    """``bytes=0-9,-5`` as (first, last) pairs; None when absent or not understood (ignored)."""
    if not value or not value.strip().lower().startswith("bytes="):
        return None
    ranges: list[tuple[int | None, int | None]] = []
    for spec in value.strip()[6:].split(","):
        spec = spec.strip()
        if not spec:
            continue
        first, sep, last = spec.partition("-")
        if not sep:
            return None
        try:
            start = int(first) if first.strip() else None
            end = int(last) if last.strip() else None
        except ValueError:
            return None
        if start is None and end is None:
            return None
        if start is not None and end is not None and end < start:
            return None
        ranges.append((start, end))
    if not ranges or len(ranges) > MAX_RANGES:
        return None
    return ranges


def resolve_ranges(ranges: list[tuple[int | None, int | None]], size: int) -> list[tuple[int, int]]:
    """Satisfiable ranges as ``[start, end)``; 416 when none is."""
    resolved = []
    for first, last in ranges:
        if first is None:
            assert last is not None
            if last == 0:
                continue
            resolved.append((max(0, size - last), size))
        elif first < size:
            resolved.append((first, size if last is None else min(last + 1, size)))
    if not resolved:
        raise SwiftError(416, headers={"content-range": f"bytes */{size}"})
    return resolved


Fetch = Callable[[int, int], Awaitable[AsyncIterator[bytes]]]


def multipart_ranges(
    ranges: list[tuple[int, int]], size: int, content_type: str, fetch: Fetch
) -> tuple[str, int, AsyncIterator[bytes]]:
    """A ``multipart/byteranges`` body: (content type, length, streamed parts)."""
    boundary = secrets.token_hex(16)
    heads = [
        (
            f"--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
        ).encode()
        for start, end in ranges
    ]
    tail = f"--{boundary}--".encode()
    length = sum(len(h) + (e - s) + 2 for h, (s, e) in zip(heads, ranges, strict=True))
    length += len(tail)

    async def body() -> AsyncIterator[bytes]:
        for head, (start, end) in zip(heads, ranges, strict=True):
            yield head
            async for chunk in await fetch(start, end):
                yield chunk
            yield b"\r\n"
        yield tail

    return f"multipart/byteranges;boundary={boundary}", length, body()
