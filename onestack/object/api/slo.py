"""Static Large Objects: manifests that list segments (``multipart-manifest=put|get|delete``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from starlette.responses import Response

from onestack.object.api import bulk
from onestack.object.api.common import SwiftRequest
from onestack.object.api.errors import SwiftError
from onestack.object.api.sources import Segment, segment_etag
from onestack.object.proxy.store import ContainerInfo

MAX_SEGMENTS = 1000
MAX_MANIFEST_SIZE = 8 * 1024 * 1024
MIN_SEGMENT_SIZE = 1


def _bad(errors: list[tuple[str, str]]) -> SwiftError:
    lines = "\n".join(f"{path}, {reason}" for path, reason in errors)
    return SwiftError(400, f"Errors:\n{lines}", content_type="text/plain")


async def put_manifest(swift: SwiftRequest, info: ContainerInfo) -> Response:
    """Validate the client's segment list against the segments, then store the manifest."""
    from onestack.object.api.objects import stored_headers, upload

    raw = b""
    async for chunk in swift.request.stream():
        raw += chunk
        if len(raw) > MAX_MANIFEST_SIZE:
            raise SwiftError(413, "Manifest File > 8388608 bytes", content_type="text/plain")
    try:
        entries = json.loads(raw)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError
    except ValueError:
        raise SwiftError(400, "Manifest must be valid JSON.\n", content_type="text/plain") from None
    if not entries:
        raise SwiftError(
            400, "Manifest must have at least one segment.\n", content_type="text/plain"
        )
    if len(entries) > MAX_SEGMENTS:
        raise SwiftError(
            400, f"Number of segments must be <= {MAX_SEGMENTS}", content_type="text/plain"
        )
    errors: list[tuple[str, str]] = []
    stored: list[dict[str, Any]] = []
    segments: list[Segment] = []
    for index, entry in enumerate(entries):
        path = entry.get("path")
        if not isinstance(path, str) or "/" not in path.strip("/"):
            errors.append((f"Index {index}", "Invalid path"))
            continue
        container, _, obj = unquote(path).lstrip("/").partition("/")
        head = await swift.store.get_object(swift.account, container, obj, method="HEAD")
        if head.status == 404:
            errors.append((path, "404 Not Found"))
            continue
        if head.status >= 300:
            errors.append((path, f"{head.status} Error"))
            continue
        backend = head.headers
        sub_slo = bool(backend.get("x-static-large-object"))
        size = int(backend.get("x-object-sysmeta-slo-size") or backend["content-length"])
        etag = backend.get("x-object-sysmeta-slo-etag") if sub_slo else None
        etag = etag or backend.get("etag", "")
        if entry.get("etag") not in (None, "") and str(entry["etag"]).strip('"') != etag:
            errors.append((path, "Etag Mismatch"))
        if entry.get("size_bytes") not in (None, "") and int(entry["size_bytes"]) != size:
            errors.append((path, "Size Mismatch"))
        first, length = 0, None
        if entry.get("range"):
            try:
                a, _, b = str(entry["range"]).partition("-")
                first, last = int(a), int(b) if b else size - 1
                if first > last or last >= size:
                    raise ValueError
                length = last - first + 1
            except ValueError:
                errors.append((path, "Unsatisfiable Range"))
                continue
        span = length if length is not None else size
        if span < MIN_SEGMENT_SIZE and index < len(entries) - 1:
            errors.append(
                (path, f"Too small; each segment must be at least {MIN_SEGMENT_SIZE} bytes.")
            )
        record = {
            "name": f"/{container}/{obj}",
            "hash": etag,
            "bytes": size,
            "content_type": backend.get("content-type", ""),
            "last_modified": backend.get("last-modified", ""),
        }
        if length is not None:
            record["range"] = f"{first}-{first + length - 1}"
        if sub_slo:
            record["sub_slo"] = True
        stored.append(record)
        segments.append(Segment(container, obj, size, etag, first, length))
    if errors:
        raise _bad(errors)
    total = sum(s.span for s in segments)
    slo_etag = segment_etag(segments)
    manifest = json.dumps(stored).encode()
    manifest_etag = hashlib.md5(manifest, usedforsecurity=False).hexdigest()
    if "etag" in swift.headers and swift.headers["etag"].strip('"') != slo_etag:
        raise SwiftError(422)
    headers = stored_headers(swift)
    content_type = headers.get("content-type", "application/octet-stream")
    headers.update(
        {
            "content-type": content_type,
            "x-static-large-object": "True",
            "x-object-sysmeta-slo-etag": slo_etag,
            "x-object-sysmeta-slo-size": str(total),
            "x-object-sysmeta-container-update-override-etag": (
                f"{manifest_etag}; slo_etag={slo_etag}"
            ),
            "x-object-sysmeta-container-update-override-size": str(total),
        }
    )
    response = await upload(
        swift, info, body=_once(manifest), headers=headers, length=len(manifest)
    )
    response.headers["etag"] = f'"{slo_etag}"'
    return response


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def delete_manifest(swift: SwiftRequest) -> Response:
    """``DELETE ?multipart-manifest=delete``: the segments, then the manifest (bulk-style)."""
    source = await swift.store.get_object(swift.account, swift.container, swift.obj)
    if source.status == 404:
        await source.close()
        raise SwiftError(404)
    if not source.headers.get("x-static-large-object"):
        await source.close()
        paths = [f"/{swift.container}/{swift.obj}"]
    else:
        entries = json.loads(await source.read())
        paths = [e["name"] for e in entries] + [f"/{swift.container}/{swift.obj}"]
    return await bulk.delete_paths(swift, paths)
