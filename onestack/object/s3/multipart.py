"""S3 multipart uploads, kept as Swift's s3api keeps them.

Parts live in the ``<bucket>+segments`` container as ``<key>/<upload id>/<part>``
beside an upload marker ``<key>/<upload id>`` that carries the object's
metadata. Completing writes a Static Large Object manifest over the parts at
``<bucket>/<key>`` with S3's multipart ETag (MD5 of the parts' MD5s, ``-N``),
so the object reads back whole through either API.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response

from onestack.object.api.listings import iso_time
from onestack.object.s3 import xmldoc
from onestack.object.s3.buckets import SEGMENTS_SUFFIX, owner
from onestack.object.s3.errors import S3Error
from onestack.object.s3.objects import S3_ETAG, object_metadata, open_copy_source, store_upload
from onestack.object.s3.request import S3Request

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10000


def segments(s3: S3Request) -> str:
    return s3.bucket + SEGMENTS_SUFFIX


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _marker(s3: S3Request, upload_id: str) -> dict[str, str]:
    head = await s3.store.get_object(
        s3.account, segments(s3), f"{s3.key}/{upload_id}", method="HEAD"
    )
    if head.status != 200:
        raise S3Error("NoSuchUpload", UploadId=upload_id)
    return head.headers


async def create_upload(s3: S3Request) -> Response:
    await s3.bucket_info("write")
    if await s3.store.container_info(s3.account, segments(s3)) is None:
        await s3.store.write_container("PUT", s3.account, segments(s3), {})
    upload_id = uuid.uuid4().hex
    headers = {**object_metadata(s3.headers), "content-length": "0"}
    status, _ = await s3.store.put_object(
        s3.account, segments(s3), f"{s3.key}/{upload_id}", headers, _once(b"")
    )
    if status >= 300:
        raise S3Error("ServiceUnavailable")
    return xmldoc.document(
        "InitiateMultipartUploadResult",
        [
            ("Bucket", s3.bucket),
            ("Key", s3.key),
            ("UploadId", upload_id),
        ],
    )


def _part_number(s3: S3Request) -> int:
    try:
        number = int(s3.query.get("partNumber", ""))
    except ValueError:
        raise S3Error(
            "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"
        ) from None
    if not 1 <= number <= MAX_PARTS:
        raise S3Error(
            "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive"
        )
    return number


async def upload_part(s3: S3Request) -> Response:
    await s3.bucket_info("write")
    upload_id = s3.query["uploadId"]
    number = _part_number(s3)
    await _marker(s3, upload_id)
    name = f"{s3.key}/{upload_id}/{number}"
    if "x-amz-copy-source" in s3.headers:
        return await _copy_part(s3, name)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in s3.request.stream():
            if chunk:
                yield chunk

    etag, _ = await store_upload(
        s3, segments(s3), name, {"content-type": "application/octet-stream"}, body()
    )
    return Response(b"", 200, headers={"etag": f'"{etag}"', "content-length": "0"})


async def _copy_part(s3: S3Request, name: str) -> Response:
    source = await open_copy_source(s3)
    start, end = 0, source.size
    spec = s3.headers.get("x-amz-copy-source-range")
    if spec:
        first, _, last = spec.removeprefix("bytes=").partition("-")
        try:
            start, end = int(first), int(last) + 1
        except ValueError:
            raise S3Error(
                "InvalidArgument",
                "The x-amz-copy-source-range value must be of the form bytes=first-last",
            ) from None
        if start >= source.size or end > source.size or end <= start:
            await source.close()
            raise S3Error("InvalidRange")
    headers = {"content-type": "application/octet-stream", "content-length": str(end - start)}
    status, out = await s3.store.put_object(
        s3.account, segments(s3), name, headers, await source.read(start, end)
    )
    if status >= 300:
        raise S3Error("ServiceUnavailable")
    return xmldoc.document(
        "CopyPartResult",
        [
            ("LastModified", iso_time(out["x-timestamp"])[:23] + "Z"),
            ("ETag", f'"{out["etag"]}"'),
        ],
    )


async def _parts(s3: S3Request, upload_id: str) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    async for row in s3.store.iter_objects(s3.account, segments(s3), f"{s3.key}/{upload_id}/"):
        suffix = row["name"].rsplit("/", 1)[-1]
        if suffix.isdigit():
            found[int(suffix)] = row
    return found


async def complete_upload(s3: S3Request) -> Response:
    info = await s3.bucket_info("write")
    del info
    upload_id = s3.query["uploadId"]
    marker = await _marker(s3, upload_id)
    root = xmldoc.parse(await s3.request.body())
    wanted = []
    for part in xmldoc.children(root, "Part"):
        try:
            number = int(xmldoc.text(part, "PartNumber") or "")
        except ValueError:
            raise S3Error("MalformedXML") from None
        wanted.append((number, (xmldoc.text(part, "ETag") or "").strip().strip('"')))
    if not wanted:
        raise S3Error("MalformedXML")
    if [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
        raise S3Error("InvalidPartOrder")
    stored = await _parts(s3, upload_id)
    manifest: list[dict[str, Any]] = []
    md5s = b""
    for index, (number, etag) in enumerate(wanted):
        row = stored.get(number)
        if row is None or row["etag"] != etag:
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
        if row["size"] < MIN_PART_SIZE and index < len(wanted) - 1:
            raise S3Error(
                "EntityTooSmall", ProposedSize=str(row["size"]), MinSizeAllowed=str(MIN_PART_SIZE)
            )
        manifest.append(
            {
                "name": f"/{segments(s3)}/{row['name']}",
                "hash": row["etag"],
                "bytes": row["size"],
                "content_type": "application/octet-stream",
                "last_modified": iso_time(row["created_at"]),
            }
        )
        md5s += bytes.fromhex(row["etag"])
    s3_etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(wanted)}"
    slo_etag = hashlib.md5(
        "".join(m["hash"] for m in manifest).encode(), usedforsecurity=False
    ).hexdigest()
    total = sum(m["bytes"] for m in manifest)
    body = json.dumps(manifest).encode()
    manifest_etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
    listing_etag = f"{manifest_etag}; s3_etag={s3_etag}; slo_etag={slo_etag}"
    headers = {
        k: v
        for k, v in marker.items()
        if k
        in (
            "content-type",
            "content-encoding",
            "content-disposition",
            "content-language",
            "cache-control",
            "expires",
        )
        or k.startswith("x-object-meta-")
    }
    headers.update(
        {
            "content-length": str(len(body)),
            "x-static-large-object": "True",
            "x-object-sysmeta-slo-etag": slo_etag,
            "x-object-sysmeta-slo-size": str(total),
            S3_ETAG: s3_etag,
            "x-object-sysmeta-container-update-override-etag": listing_etag,
            "x-object-sysmeta-container-update-override-size": str(total),
        }
    )
    status, _ = await s3.store.put_object(s3.account, s3.bucket, s3.key, headers, _once(body))
    if status >= 300:
        raise S3Error("ServiceUnavailable")
    for number, row in stored.items():
        if number not in {n for n, _ in wanted}:
            await s3.store.write_object("DELETE", s3.account, segments(s3), row["name"], {})
    await s3.store.write_object("DELETE", s3.account, segments(s3), f"{s3.key}/{upload_id}", {})
    return xmldoc.document(
        "CompleteMultipartUploadResult",
        [
            ("Location", f"/{s3.bucket}/{s3.key}"),
            ("Bucket", s3.bucket),
            ("Key", s3.key),
            ("ETag", f'"{s3_etag}"'),
        ],
    )


async def abort_upload(s3: S3Request) -> Response:
    await s3.bucket_info("write")
    upload_id = s3.query["uploadId"]
    await _marker(s3, upload_id)
    for row in (await _parts(s3, upload_id)).values():
        await s3.store.write_object("DELETE", s3.account, segments(s3), row["name"], {})
    await s3.store.write_object("DELETE", s3.account, segments(s3), f"{s3.key}/{upload_id}", {})
    return Response(b"", 204)


async def list_parts(s3: S3Request) -> Response:
    await s3.bucket_info("read")
    upload_id = s3.query["uploadId"]
    await _marker(s3, upload_id)
    try:
        max_parts = min(int(s3.query.get("max-parts", "1000")), 1000)
        after = int(s3.query.get("part-number-marker", "0"))
    except ValueError:
        raise S3Error(
            "InvalidArgument", "max-parts and part-number-marker must be integers"
        ) from None
    parts = sorted((n, r) for n, r in (await _parts(s3, upload_id)).items() if n > after)
    page = parts[:max_parts]
    truncated = len(parts) > max_parts
    doc: list[Any] = [
        ("Bucket", s3.bucket),
        ("Key", s3.key),
        ("UploadId", upload_id),
        ("Initiator", owner(s3)),
        ("Owner", owner(s3)),
        ("StorageClass", "STANDARD"),
        ("PartNumberMarker", after),
        ("NextPartNumberMarker", page[-1][0] if page else after),
        ("MaxParts", max_parts),
        ("IsTruncated", "true" if truncated else "false"),
    ]
    for number, row in page:
        doc.append(
            (
                "Part",
                [
                    ("PartNumber", number),
                    ("LastModified", iso_time(row["created_at"])[:23] + "Z"),
                    ("ETag", f'"{row["etag"]}"'),
                    ("Size", row["size"]),
                ],
            )
        )
    return xmldoc.document("ListPartsResult", doc)


async def list_uploads(s3: S3Request) -> Response:
    await s3.bucket_info("read")
    prefix = s3.query.get("prefix", "")
    uploads: list[Any] = []
    async for row in s3.store.iter_objects(s3.account, segments(s3), prefix):
        key, _, rest = row["name"].rpartition("/")
        if len(rest) == 32 and all(c in "0123456789abcdef" for c in rest):
            uploads.append(
                (
                    "Upload",
                    [
                        ("Key", key),
                        ("UploadId", rest),
                        ("Initiator", owner(s3)),
                        ("Owner", owner(s3)),
                        ("StorageClass", "STANDARD"),
                        ("Initiated", iso_time(row["created_at"])[:23] + "Z"),
                    ],
                )
            )
    return xmldoc.document(
        "ListMultipartUploadsResult",
        [
            ("Bucket", s3.bucket),
            ("KeyMarker", ""),
            ("UploadIdMarker", ""),
            ("Prefix", prefix),
            ("MaxUploads", 1000),
            ("IsTruncated", "false"),
            *uploads,
        ],
    )
