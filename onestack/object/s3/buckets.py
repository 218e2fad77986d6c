"""S3 bucket operations over containers: list, create, delete, head, list objects, delete many."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

from starlette.responses import Response

from onestack.object.api.listings import iso_time
from onestack.object.s3 import xmldoc
from onestack.object.s3.errors import S3Error
from onestack.object.s3.request import S3Request

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")
SEGMENTS_SUFFIX = "+segments"
MAX_KEYS = 1000


def s3_etag(row_etag: str) -> str:
    """The ETag S3 shows for a listing row (multipart objects keep their ``-N`` ETag)."""
    if "s3_etag=" in row_etag:
        return row_etag.split("s3_etag=", 1)[1].split(";")[0].strip()
    return row_etag.split(";")[0].strip()


def owner(s3: S3Request) -> list[Any]:
    token = s3.signed.token
    return [("ID", token.project_id), ("DisplayName", token.project_name or token.project_id)]


async def list_buckets(s3: S3Request) -> Response:
    s3.bucket = ""
    s3.require_owner()
    response = await s3.store.account_request("GET", s3.account, {"limit": "10000"})
    rows = json.loads(await response.read() or b"[]") if response.ok else []
    if not response.ok:
        await response.close()
    buckets = [
        (
            "Bucket",
            [("Name", row["name"]), ("CreationDate", iso_time(row["put_timestamp"])[:23] + "Z")],
        )
        for row in rows
        if not row["name"].endswith(SEGMENTS_SUFFIX)
    ]
    return xmldoc.document("ListAllMyBucketsResult", [("Owner", owner(s3)), ("Buckets", buckets)])


async def create_bucket(s3: S3Request) -> Response:
    s3.require_owner()
    if not BUCKET_NAME.match(s3.bucket) or ".." in s3.bucket:
        raise S3Error("InvalidBucketName", BucketName=s3.bucket)
    raw = await s3.request.body()
    if raw.strip():
        config = xmldoc.parse(raw)
        location = xmldoc.text(config, "LocationConstraint")
        if location and location != s3.service.settings.s3_region:
            raise S3Error("InvalidLocationConstraint")
    status = await s3.store.write_container("PUT", s3.account, s3.bucket, {})
    if status == 202:
        raise S3Error("BucketAlreadyOwnedByYou", BucketName=s3.bucket)
    if status != 201:
        raise S3Error("ServiceUnavailable")
    return Response(b"", 200, headers={"location": f"/{s3.bucket}", "content-length": "0"})


async def delete_bucket(s3: S3Request) -> Response:
    s3.require_owner()
    await s3.bucket_info()
    status = await s3.store.write_container("DELETE", s3.account, s3.bucket, {})
    if status == 409:
        raise S3Error("BucketNotEmpty", BucketName=s3.bucket)
    if status == 404:
        raise S3Error("NoSuchBucket", BucketName=s3.bucket)
    if status >= 300:
        raise S3Error("ServiceUnavailable")
    await s3.store.write_container("DELETE", s3.account, s3.bucket + SEGMENTS_SUFFIX, {})
    return Response(b"", 204)


async def head_bucket(s3: S3Request) -> Response:
    await s3.bucket_info("read")
    return Response(b"", 200, headers={"x-amz-bucket-region": s3.service.settings.s3_region})


async def bucket_location(s3: S3Request) -> Response:
    s3.require_owner()
    await s3.bucket_info()
    region = s3.service.settings.s3_region
    root = xmldoc.element("LocationConstraint", xmlns=xmldoc.NAMESPACE)
    root.text = "" if region == "us-east-1" else region
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)
    return Response(body, 200, media_type="application/xml")


async def list_objects(s3: S3Request) -> Response:
    await s3.bucket_info("read")
    query = s3.query
    v2 = query.get("list-type") == "2"
    try:
        max_keys = min(int(query.get("max-keys", MAX_KEYS)), MAX_KEYS)
    except ValueError:
        raise S3Error("InvalidArgument", "max-keys must be an integer") from None
    if max_keys < 0:
        raise S3Error("InvalidArgument", "max-keys must be positive")
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    if v2:
        token = query.get("continuation-token")
        marker = _decode_token(token) if token else query.get("start-after", "")
    else:
        marker = query.get("marker", "")
    url = query.get("encoding-type") == "url"

    def enc(value: str) -> str:
        return quote(value, safe="/") if url else value

    rows: list[dict[str, Any]] = []
    if max_keys:
        status, rows, _ = await s3.store.list_objects(
            s3.account,
            s3.bucket,
            prefix=prefix,
            delimiter=delimiter,
            marker=marker,
            limit=str(max_keys + 1),
        )
        if status == 404:
            raise S3Error("NoSuchBucket", BucketName=s3.bucket)
    truncated = len(rows) > max_keys
    rows = rows[:max_keys]
    contents: list[Any] = []
    prefixes: list[Any] = []
    for row in rows:
        if "subdir" in row:
            prefixes.append(("CommonPrefixes", [("Prefix", enc(row["subdir"]))]))
            continue
        entry: list[Any] = [
            ("Key", enc(row["name"])),
            ("LastModified", iso_time(row["created_at"])[:23] + "Z"),
            ("ETag", f'"{s3_etag(row["etag"])}"'),
            ("Size", _size(row)),
            ("StorageClass", "STANDARD"),
        ]
        if not v2 or query.get("fetch-owner") == "true":
            entry.append(("Owner", owner(s3)))
        contents.append(("Contents", entry))
    last = rows[-1] if rows else None
    last_name = (last.get("name") or last.get("subdir")) if last else ""
    doc: list[Any] = [("Name", s3.bucket), ("Prefix", enc(prefix))]
    if v2:
        if query.get("start-after"):
            doc.append(("StartAfter", enc(query["start-after"])))
        if query.get("continuation-token"):
            doc.append(("ContinuationToken", query["continuation-token"]))
        if truncated:
            doc.append(("NextContinuationToken", _encode_token(last_name or "")))
        doc.append(("KeyCount", len(rows)))
    else:
        doc.append(("Marker", enc(marker)))
        if truncated and delimiter:
            doc.append(("NextMarker", enc(last_name or "")))
    doc.append(("MaxKeys", max_keys))
    if delimiter:
        doc.append(("Delimiter", enc(delimiter)))
    if url:
        doc.append(("EncodingType", "url"))
    doc.append(("IsTruncated", "true" if truncated else "false"))
    return xmldoc.document("ListBucketResult", doc + contents + prefixes)


def _size(row: dict[str, Any]) -> int:
    content_type = row.get("content_type", "")
    if ";swift_bytes=" in content_type:
        return int(content_type.split(";swift_bytes=")[1])
    return int(row["size"])


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect") from None


async def delete_objects(s3: S3Request) -> Response:
    """``POST /bucket?delete``: many keys at once, errors reported per key."""
    from onestack.object.s3.objects import remove_object

    info = await s3.bucket_info("write")
    raw = await s3.request.body()
    if "content-md5" in s3.headers:
        digest = base64.b64encode(hashlib.md5(raw, usedforsecurity=False).digest()).decode()
        if digest != s3.headers["content-md5"]:
            raise S3Error("BadDigest")
    root = xmldoc.parse(raw)
    quiet = (xmldoc.text(root, "Quiet") or "").lower() == "true"
    objects = xmldoc.children(root, "Object")
    if len(objects) > 1000:
        raise S3Error("MalformedXML")
    results: list[Any] = []
    for item in objects:
        key = xmldoc.text(item, "Key") or ""
        try:
            await remove_object(s3, info, key)
            if not quiet:
                results.append(("Deleted", [("Key", key)]))
        except S3Error as exc:
            results.append(("Error", [("Key", key), ("Code", exc.code), ("Message", exc.message)]))
    return xmldoc.document("DeleteResult", results)
