"""S3 object operations over Swift objects: put, get, head, delete, copy."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from starlette.responses import Response, StreamingResponse

from onestack.object.api.common import http_date
from onestack.object.api.conditions import check_conditions
from onestack.object.api.errors import SwiftError
from onestack.object.api.listings import iso_time
from onestack.object.api.sources import Source, open_source
from onestack.object.proxy.store import ContainerInfo
from onestack.object.s3 import xmldoc
from onestack.object.s3.auth import payload_reader
from onestack.object.s3.errors import S3Error
from onestack.object.s3.request import S3Request

SEGMENTS_SUFFIX = "+segments"
CONTENT_HEADERS = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
)
OVERRIDES = {
    "response-content-type": "content-type",
    "response-content-language": "content-language",
    "response-expires": "expires",
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
}
S3_ETAG = "x-object-sysmeta-s3api-etag"


def object_metadata(headers: dict[str, str]) -> dict[str, str]:
    """Content headers and ``x-amz-meta-*`` as the object's Swift metadata."""
    stored = {k: v for k, v in headers.items() if k in CONTENT_HEADERS}
    # aws-chunked is how the body travelled, not how the object is encoded.
    encodings = [e.strip() for e in stored.pop("content-encoding", "").split(",")]
    kept = [e for e in encodings if e and e != "aws-chunked"]
    if kept:
        stored["content-encoding"] = ", ".join(kept)
    for key, value in headers.items():
        if key.startswith("x-amz-meta-"):
            stored["x-object-meta-" + key[len("x-amz-meta-") :]] = value
    stored.setdefault("content-type", "binary/octet-stream")
    return stored


def etag_of(headers: dict[str, str]) -> str:
    """The ETag S3 shows: the multipart ``md5-N`` form, else the MD5."""
    return headers.get(S3_ETAG) or headers.get("etag", "").strip('"')


def _content_length(s3: S3Request) -> int:
    raw = s3.headers.get("x-amz-decoded-content-length") or s3.headers.get("content-length")
    if raw is None:
        raise S3Error("MissingContentLength")
    try:
        return int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", "Content-Length is not a number.") from None


def _md5_header(s3: S3Request) -> str | None:
    raw = s3.headers.get("content-md5")
    if raw is None:
        return None
    try:
        digest = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest") from None
    if len(digest) != 16:
        raise S3Error("InvalidDigest")
    return digest.hex()


async def store_upload(
    s3: S3Request,
    container: str,
    obj: str,
    headers: dict[str, str],
    body: AsyncIterator[bytes],
) -> tuple[str, str]:
    """Write a client's upload (its signature and digests checked); (etag, timestamp)."""
    length = _content_length(s3)
    if length > s3.service.settings.max_file_size:
        raise S3Error("EntityTooLarge")
    sent = {**headers, "content-length": str(length)}
    expected = _md5_header(s3)
    if expected:
        sent["etag"] = expected
    reader = payload_reader(s3.signed, s3.headers, body)
    try:
        status, out = await s3.store.put_object(s3.account, container, obj, sent, reader)
    except S3Error:
        raise
    if status == 422:
        raise S3Error("BadDigest")
    if status == 499:
        raise S3Error("IncompleteBody")
    if status >= 300:
        raise S3Error("ServiceUnavailable")
    return out["etag"], out["x-timestamp"]


async def _request_body(s3: S3Request) -> AsyncIterator[bytes]:
    async for chunk in s3.request.stream():
        if chunk:
            yield chunk


async def put_object(s3: S3Request) -> Response:
    if "x-amz-copy-source" in s3.headers:
        return await copy_object(s3)
    await s3.bucket_info("write")
    etag, _ = await store_upload(
        s3, s3.bucket, s3.key, object_metadata(s3.headers), _request_body(s3)
    )
    return Response(b"", 200, headers={"etag": f'"{etag}"', "content-length": "0"})


def response_headers(source: Source, query: Any) -> dict[str, str]:
    backend = source.headers
    headers = {k: v for k, v in backend.items() if k in CONTENT_HEADERS}
    if ";swift_bytes=" in headers.get("content-type", ""):
        headers["content-type"] = headers["content-type"].split(";swift_bytes=")[0]
    for key, value in backend.items():
        if key.startswith("x-object-meta-"):
            headers["x-amz-meta-" + key[len("x-object-meta-") :]] = value
    modified = max(float(backend["x-timestamp"]), float(backend.get("x-meta-timestamp", 0)))
    headers["last-modified"] = http_date(math.ceil(modified))
    headers["etag"] = f'"{etag_of(backend)}"'
    headers["accept-ranges"] = "bytes"
    if source.large == "slo" and backend.get(S3_ETAG):
        parts = backend[S3_ETAG].rsplit("-", 1)[-1]
        headers["x-amz-mp-parts-count"] = parts
    for param, header in OVERRIDES.items():
        if param in query:
            headers[header] = query[param]
    return headers


def _single_range(value: str | None, size: int) -> tuple[int, int] | None:
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if not first:
            length = int(last)
            return (max(0, size - length), size) if length else None
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        raise S3Error("InvalidRange", ActualObjectSize=str(size))
    return start, end


async def get_object(s3: S3Request) -> Response:
    await s3.bucket_info("read")
    head = s3.request.method == "HEAD"
    try:
        source = await open_source(s3.store, s3.account, s3.bucket, s3.key)
    except SwiftError as exc:
        raise S3Error("ServiceUnavailable" if exc.status >= 500 else "InvalidRequest") from None
    if source is None:
        raise S3Error("NoSuchKey", Key=s3.key)
    headers = response_headers(source, s3.query)
    modified = max(
        float(source.headers["x-timestamp"]), float(source.headers.get("x-meta-timestamp", 0))
    )
    verdict = check_conditions(s3.headers, etag_of(source.headers), modified, reading=True)
    if verdict is not None:
        await source.close()
        if verdict == 304:
            return Response(
                b"",
                304,
                headers={"etag": headers["etag"], "last-modified": headers["last-modified"]},
            )
        raise S3Error("PreconditionFailed", Condition="If-Match")
    size = source.size
    try:
        span = _single_range(s3.headers.get("range"), size)
    except S3Error:
        await source.close()
        raise
    if head:
        await source.close()
        headers["content-length"] = str(size)
        return Response(b"", 200, headers=headers)
    if span is None:
        headers["content-length"] = str(size)
        return StreamingResponse(await source.read(0, size), 200, headers=headers)
    start, end = span
    headers["content-length"] = str(end - start)
    headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(await source.read(start, end), 206, headers=headers)


async def remove_object(s3: S3Request, info: ContainerInfo, key: str) -> None:
    """Delete a key (and a multipart object's parts); absent keys are fine, as in S3."""
    head = await s3.store.get_object(s3.account, s3.bucket, key, method="HEAD")
    if head.status == 404:
        return
    if head.status >= 300:
        raise S3Error("ServiceUnavailable")
    if head.headers.get("x-static-large-object") and head.headers.get(S3_ETAG):
        source = await open_source(s3.store, s3.account, s3.bucket, key, manifest_raw=True)
        if source is not None and source.first is not None:
            import json

            entries = json.loads(await source.first.read())
            for entry in entries:
                container, _, obj = entry["name"].lstrip("/").partition("/")
                await s3.store.write_object("DELETE", s3.account, container, obj, {})
    status = await s3.store.write_object("DELETE", s3.account, s3.bucket, key, {})
    if status >= 300 and status != 404:
        raise S3Error("ServiceUnavailable")


async def delete_object(s3: S3Request) -> Response:
    info = await s3.bucket_info("write")
    await remove_object(s3, info, s3.key)
    return Response(b"", 204)


def copy_source(s3: S3Request) -> tuple[str, str]:
    raw = unquote(s3.headers["x-amz-copy-source"].split("?versionId=")[0]).lstrip("/")
    bucket, _, key = raw.partition("/")
    if not bucket or not key:
        raise S3Error(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
        )
    return bucket, key


async def open_copy_source(s3: S3Request) -> Source:
    bucket, key = copy_source(s3)
    info = await s3.store.container_info(s3.account, bucket)
    reader = S3Request(s3.request, s3.service, s3.signed, bucket, key, s3.headers)
    if info is None:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    reader.authorize(info.read_acl, method="GET")
    source = await open_source(s3.store, s3.account, bucket, key)
    if source is None:
        raise S3Error("NoSuchKey", Key=key)
    modified = float(source.headers["x-timestamp"])
    conditions = {
        name[len("x-amz-copy-source-") :]: value
        for name, value in s3.headers.items()
        if name.startswith("x-amz-copy-source-if-")
    }
    if check_conditions(conditions, etag_of(source.headers), modified, reading=False):
        await source.close()
        raise S3Error("PreconditionFailed")
    return source


async def copy_object(s3: S3Request) -> Response:
    await s3.bucket_info("write")
    source = await open_copy_source(s3)
    if source.size > s3.service.settings.max_file_size:
        await source.close()
        raise S3Error("EntityTooLarge")
    if s3.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE":
        headers = object_metadata(s3.headers)
    else:
        if copy_source(s3) == (s3.bucket, s3.key):
            await source.close()
            raise S3Error(
                "InvalidRequest",
                "This copy request is illegal because it is trying "
                "to copy an object to itself without changing the object's metadata, "
                "storage class, website redirect location or encryption attributes.",
            )
        headers = {
            k: v
            for k, v in source.headers.items()
            if k in CONTENT_HEADERS or k.startswith("x-object-meta-")
        }
        if ";swift_bytes=" in headers.get("content-type", ""):
            headers["content-type"] = headers["content-type"].split(";swift_bytes=")[0]
    headers["content-length"] = str(source.size)
    status, out = await s3.store.put_object(
        s3.account, s3.bucket, s3.key, headers, await source.read(0, source.size)
    )
    if status >= 300:
        raise S3Error("ServiceUnavailable")
    return xmldoc.document(
        "CopyObjectResult",
        [
            ("LastModified", iso_time(out["x-timestamp"])[:23] + "Z"),
            ("ETag", f'"{out["etag"]}"'),
        ],
    )
