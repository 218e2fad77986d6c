"""``/v1/{account}/{container}/{object}``: object PUT, GET/HEAD, POST, DELETE and COPY."""

from __future__ import annotations

import math
import mimetypes
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from onestack.core.asgi.routing import RouteTable
from onestack.object.api import containers, slo, versioning
from onestack.object.api.common import (
    SwiftRequest,
    check_metadata,
    empty,
    http_date,
    swift_request,
)
from onestack.object.api.conditions import (
    check_conditions,
    multipart_ranges,
    parse_ranges,
    resolve_ranges,
)
from onestack.object.api.errors import SwiftError
from onestack.object.api.sources import Source, open_source
from onestack.object.proxy.store import ContainerInfo

routes = RouteTable()
PATH = "/v1/{account}/{container}/{obj:path}"

STORED = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-object-manifest",
    "x-delete-at",
)
SHOWN = (*STORED, "etag", "x-timestamp", "x-static-large-object")


def client_headers(source: Source) -> dict[str, str]:
    """The headers of an object a client sees (no backend or system metadata)."""
    backend = source.headers
    headers = {k: v for k, v in backend.items() if k in SHOWN or k.startswith("x-object-meta-")}
    modified = max(float(backend["x-timestamp"]), float(backend.get("x-meta-timestamp", 0)))
    headers["last-modified"] = http_date(math.ceil(modified))
    headers["etag"] = source.etag
    headers["accept-ranges"] = "bytes"
    if ";swift_bytes=" in headers.get("content-type", ""):
        headers["content-type"] = headers["content-type"].split(";swift_bytes=")[0]
    return headers


def last_modified(source: Source) -> float:
    backend = source.headers
    return max(float(backend["x-timestamp"]), float(backend.get("x-meta-timestamp", 0)))


async def object_context(request: Request, acl: str) -> tuple[SwiftRequest, ContainerInfo]:
    """The request and its container; 404 without the container, 401/403 without access."""
    swift = swift_request(request, "object")
    info = await swift.store.container_info(swift.account, swift.container)
    swift.authorize(getattr(info, f"{acl}_acl") if info else None)
    if info is None:
        raise SwiftError(404)
    return swift, info


def delete_at(headers: dict[str, str]) -> str | None:
    """X-Delete-At from X-Delete-At or X-Delete-After; 400 when invalid or past."""
    if "x-delete-after" in headers:
        try:
            after = int(headers["x-delete-after"])
        except ValueError:
            raise SwiftError(400, "Non-integer X-Delete-After", content_type="text/plain") from None
        if after < 0:
            raise SwiftError(400, "X-Delete-After in past", content_type="text/plain")
        return str(int(time.time()) + after)
    if "x-delete-at" in headers:
        try:
            at = int(headers["x-delete-at"])
        except ValueError:
            raise SwiftError(400, "Non-integer X-Delete-At", content_type="text/plain") from None
        if at < time.time():
            raise SwiftError(400, "X-Delete-At in past", content_type="text/plain")
        return str(at)
    return None


def stored_headers(swift: SwiftRequest) -> dict[str, str]:
    """Headers of a PUT that become the object's metadata."""
    headers = {
        k: v for k, v in swift.headers.items() if k in STORED or k.startswith("x-object-meta-")
    }
    check_metadata(headers, "object")
    expiry = delete_at(swift.headers)
    headers.pop("x-delete-at", None)
    if expiry:
        headers["x-delete-at"] = expiry
    if "x-object-manifest" in headers:
        manifest = unquote(headers["x-object-manifest"])
        if "/" not in manifest.strip("/") or manifest.startswith("/"):
            raise SwiftError(
                400,
                "X-Object-Manifest must be in the format container/prefix",
                content_type="text/plain",
            )
    content_type = headers.get("content-type")
    if not content_type or swift.headers.get("x-detect-content-type", "").lower() == "true":
        guessed, _ = mimetypes.guess_type(swift.obj)
        headers["content-type"] = guessed or "application/octet-stream"
    return headers


async def request_body(request: Request) -> AsyncIterator[bytes]:
    """The client's upload, chunk by chunk (raises ClientDisconnect if the client goes)."""
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _length(swift: SwiftRequest) -> int | None:
    """Content-Length of the upload; 411 when there is neither it nor chunked encoding."""
    raw = swift.headers.get("content-length")
    chunked = "chunked" in swift.headers.get("transfer-encoding", "").lower()
    if raw is None:
        if not chunked:
            raise SwiftError(411)
        return None
    try:
        length = int(raw)
    except ValueError:
        raise SwiftError(400, "Invalid Content-Length", content_type="text/plain") from None
    if length < 0:
        raise SwiftError(400, "Invalid Content-Length", content_type="text/plain")
    return length


async def check_quotas(swift: SwiftRequest, info: ContainerInfo, length: int) -> None:
    """Container and account quotas (413 ``Upload exceeds quota.``)."""
    quota_bytes = info.meta("quota-bytes")
    if quota_bytes and quota_bytes.isdigit() and info.bytes_used + length > int(quota_bytes):
        raise SwiftError(413, "Upload exceeds quota.", content_type="text/plain")
    quota_count = info.meta("quota-count")
    if quota_count and quota_count.isdigit() and info.object_count + 1 > int(quota_count):
        raise SwiftError(413, "Upload exceeds quota.", content_type="text/plain")
    account = await swift.store.account_info(swift.account)
    account_quota = account.meta("quota-bytes") if account else None
    if (
        account
        and account_quota
        and account_quota.isdigit()
        and account.bytes_used + length > int(account_quota)
    ):
        raise SwiftError(413, "Upload exceeds quota.", content_type="text/plain")


# -- PUT ----------------------------------------------------------------------------------


@routes.put(PATH)
async def put_object(request: Request) -> Response:
    if not request.path_params["obj"]:
        return await containers.put_container(request)
    swift, info = await object_context(request, "write")
    query = request.query_params
    if "x-copy-from" in swift.headers:
        return await copy_object(swift, info)
    if query.get("multipart-manifest") == "put":
        return await slo.put_manifest(swift, info)
    return await upload(swift, info)


async def upload(
    swift: SwiftRequest,
    info: ContainerInfo,
    *,
    body: AsyncIterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> Response:
    """Store a client's body (or ``body``) as the object, archiving the old version first."""
    if body is None:
        length = _length(swift)
    if length is not None and length > swift.service.settings.max_file_size:
        raise SwiftError(413, "Your request is too large.", content_type="text/plain")
    if "x-static-large-object" in swift.headers and headers is None:
        raise SwiftError(
            400,
            "X-Static-Large-Object is a reserved header. To create a static "
            "large object add query param multipart-manifest=put.",
            content_type="text/plain",
        )
    stored = headers if headers is not None else stored_headers(swift)
    if swift.headers.get("if-none-match") == "*":
        existing = await swift.store.get_object(
            swift.account, swift.container, swift.obj, method="HEAD"
        )
        if existing.status == 200:
            raise SwiftError(412)
    elif "if-none-match" in swift.headers and headers is None:
        raise SwiftError(
            400, "Only If-None-Match: * is supported for PUT", content_type="text/plain"
        )
    await check_quotas(swift, info, length or 0)
    sent = dict(stored)
    if length is not None:
        sent["content-length"] = str(length)
    if "etag" in swift.headers and headers is None:
        sent["etag"] = swift.headers["etag"].strip('"')
    await versioning.archive_current(swift, info)
    try:
        status, out = await swift.store.put_object(
            swift.account, swift.container, swift.obj, sent, body or request_body(swift.request)
        )
    except ClientDisconnect:
        raise SwiftError(499) from None
    if status == 422:
        raise SwiftError(422)
    if status >= 300:
        raise SwiftError(status if status in (409, 499, 507) else 503)
    modified = http_date(math.ceil(float(out["x-timestamp"])))
    return empty(201, {"etag": out["etag"], "last-modified": modified})


# -- copy ---------------------------------------------------------------------------------


def _split_copy_path(value: str) -> tuple[str, str]:
    path = unquote(value).lstrip("/")
    container, _, obj = path.partition("/")
    if not container or not obj:
        raise SwiftError(
            412,
            "X-Copy-From header must be of the form <container name>/<object name>",
            content_type="text/plain",
        )
    return container, obj


async def copy_object(swift: SwiftRequest, info: ContainerInfo) -> Response:
    """PUT with ``X-Copy-From``: a server-side copy, metadata merged unless made fresh."""
    if swift.headers.get("content-length", "0") not in ("0", ""):
        raise SwiftError(400, "Copy requests require a zero byte body", content_type="text/plain")
    src_container, src_obj = _split_copy_path(swift.headers["x-copy-from"])
    src_account = unquote(swift.headers.get("x-copy-from-account", swift.account))
    src_info = await swift.store.container_info(src_account, src_container)
    reader = SwiftRequest(
        swift.request,
        swift.service,
        src_account,
        src_container,
        src_obj,
        swift.headers,
        swift.token,
        temp_url=swift.temp_url,
    )
    reader.grant = swift.grant
    if not swift.temp_url:
        reader.authorize(src_info.read_acl if src_info else None, method="GET")
    if src_info is None:
        raise SwiftError(404)
    raw = swift.request.query_params.get("multipart-manifest") == "get"
    source = await open_source(swift.store, src_account, src_container, src_obj, manifest_raw=raw)
    if source is None:
        raise SwiftError(404)
    if source.size > swift.service.settings.max_file_size:
        await source.close()
        raise SwiftError(413, "Your request is too large.", content_type="text/plain")
    fresh = swift.headers.get("x-fresh-metadata", "").lower() in ("true", "1", "yes")
    headers: dict[str, str] = {}
    if not fresh:
        headers = {
            k: v for k, v in source.headers.items() if k in STORED or k.startswith("x-object-meta-")
        }
        if source.large == "slo":
            headers.pop("x-object-manifest", None)
    elif "content-type" in source.headers:
        headers["content-type"] = source.headers["content-type"]
    updates = {
        k: v for k, v in swift.headers.items() if k in STORED or k.startswith("x-object-meta-")
    }
    check_metadata(updates, "object")
    headers.update(updates)
    expiry = delete_at(swift.headers)
    if expiry:
        headers["x-delete-at"] = expiry
    if raw and source.headers.get("x-static-large-object"):
        headers["x-static-large-object"] = "True"
        for key, value in source.headers.items():
            if key.startswith("x-object-sysmeta-"):
                headers[key] = value
    headers["content-type"] = headers.get("content-type", "application/octet-stream").split(
        ";swift_bytes="
    )[0]
    body = await source.read(0, source.size)
    response = await upload(swift, info, body=body, headers=headers, length=source.size)
    response.headers["x-copied-from"] = quote(f"{src_container}/{src_obj}")
    response.headers["x-copied-from-last-modified"] = http_date(math.ceil(last_modified(source)))
    if src_account != swift.account:
        response.headers["x-copied-from-account"] = quote(src_account)
    return response


@routes.add("COPY", PATH)
async def copy_verb(request: Request) -> Response:
    """``COPY`` with ``Destination: container/object``: a PUT with X-Copy-From in reverse."""
    swift = swift_request(request, "object")
    destination = swift.headers.get("destination")
    if not destination:
        raise SwiftError(412, "Destination header required", content_type="text/plain")
    dest_container, dest_obj = _split_copy_path(destination)
    dest_account = unquote(swift.headers.get("destination-account", swift.account))
    swift.headers["x-copy-from"] = quote(f"{swift.container}/{swift.obj}")
    swift.headers["x-copy-from-account"] = swift.account
    swift.headers["content-length"] = "0"
    target = SwiftRequest(
        request,
        swift.service,
        dest_account,
        dest_container,
        dest_obj,
        swift.headers,
        swift.token,
        temp_url=swift.temp_url,
    )
    info = await target.store.container_info(dest_account, dest_container)
    target.authorize(info.write_acl if info else None, method="PUT")
    if info is None:
        raise SwiftError(404)
    return await copy_object(target, info)


# -- GET / HEAD ---------------------------------------------------------------------------


@routes.get(PATH)
async def get_object(request: Request) -> Response:
    if not request.path_params["obj"]:
        return await containers.get_container(request)
    swift, _ = await object_context(request, "read")
    head = request.method == "HEAD"
    manifest_get = request.query_params.get("multipart-manifest") == "get"
    ranges = None if head else parse_ranges(swift.headers.get("range"))
    first_range = None
    if ranges is not None and len(ranges) == 1:
        first, last = ranges[0]
        first_range = {
            "range": f"bytes={'' if first is None else first}-{'' if last is None else last}"
        }
    if head:
        source = await _head_source(swift, manifest_get)
    else:
        source = await open_source(
            swift.store,
            swift.account,
            swift.container,
            swift.obj,
            headers=first_range,
            manifest_raw=manifest_get,
        )
    if source is None:
        raise SwiftError(404)
    headers = client_headers(source)
    if manifest_get and source.headers.get("x-static-large-object"):
        headers["content-type"] = "application/json; charset=utf-8"
        headers.pop("x-static-large-object", None)
        if request.query_params.get("format") == "raw":
            return await _raw_manifest(source, headers)
    status = check_conditions(swift.headers, source.etag, last_modified(source), reading=True)
    if status is not None:
        await source.close()
        if status == 304:
            return Response(
                b"", 304, headers={k: v for k, v in headers.items() if k != "content-length"}
            )
        raise SwiftError(412, headers={"etag": source.etag})
    if swift.temp_url:
        headers.update(swift.request.scope["state"]["temp_url"].response_headers(swift.obj))
    size = source.size
    if head:
        await source.close()
        headers["content-length"] = str(size)
        return Response(b"", 200, headers=headers)
    if ranges is None:
        headers["content-length"] = str(size)
        return StreamingResponse(await source.read(0, size), 200, headers=headers)
    resolved = resolve_ranges(ranges, size)
    if len(resolved) == 1:
        start, end = resolved[0]
        headers["content-length"] = str(end - start)
        headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
        return StreamingResponse(await source.read(start, end), 206, headers=headers)
    media, length, body = multipart_ranges(
        resolved, size, headers.get("content-type", "application/octet-stream"), source.read
    )
    await source.close()
    headers["content-type"] = media
    headers["content-length"] = str(length)
    return StreamingResponse(body, 206, headers=headers)


async def _head_source(swift: SwiftRequest, manifest_get: bool) -> Source | None:
    """HEAD: metadata alone, unless the object is a manifest whose totals must be computed."""
    response = await swift.store.get_object(
        swift.account, swift.container, swift.obj, method="HEAD"
    )
    if response.status == 404:
        return None
    if response.status >= 300:
        raise SwiftError(503 if response.status >= 500 else response.status)
    backend = response.headers
    if "x-object-manifest" in backend or (
        backend.get("x-static-large-object") and not manifest_get
    ):
        slo_size = backend.get("x-object-sysmeta-slo-size")
        slo_etag = backend.get("x-object-sysmeta-slo-etag")
        if slo_size and slo_etag:
            return Source(
                swift.store,
                swift.account,
                swift.container,
                swift.obj,
                int(slo_size),
                f'"{slo_etag}"',
                backend,
                large="slo",
            )
        source = await open_source(swift.store, swift.account, swift.container, swift.obj)
        return source
    return Source(
        swift.store,
        swift.account,
        swift.container,
        swift.obj,
        int(backend.get("content-length", "0")),
        backend.get("etag", ""),
        backend,
    )


async def _raw_manifest(source: Source, headers: dict[str, str]) -> Response:
    import json

    first = source.first
    source.first = None
    assert first is not None
    entries = json.loads(await first.read())
    raw = [
        {
            "path": e["name"],
            "etag": e["hash"],
            "size_bytes": e["bytes"],
            **({"range": e["range"]} if e.get("range") else {}),
        }
        for e in entries
    ]
    body = json.dumps(raw).encode()
    headers["content-length"] = str(len(body))
    return Response(body, 200, headers=headers)


# -- POST / DELETE ------------------------------------------------------------------------


@routes.post(PATH)
async def post_object(request: Request) -> Response:
    if not request.path_params["obj"]:
        return await containers.post_container(request)
    swift, _ = await object_context(request, "write")
    headers: dict[str, Any] = {
        k: v for k, v in swift.headers.items() if k.startswith("x-object-meta-")
    }
    check_metadata(headers, "object")
    for name in (
        "content-type",
        "content-encoding",
        "content-disposition",
        "content-language",
        "cache-control",
        "expires",
    ):
        if name in swift.headers:
            headers[name] = swift.headers[name]
    expiry = delete_at(swift.headers)
    if expiry:
        headers["x-delete-at"] = expiry
    status = await swift.store.write_object(
        "POST", swift.account, swift.container, swift.obj, headers
    )
    if status >= 300:
        raise SwiftError(status if status in (404, 409) else 503)
    return empty(202)


@routes.delete(PATH)
async def delete_object(request: Request) -> Response:
    if not request.path_params["obj"]:
        return await containers.delete_container(request)
    swift, info = await object_context(request, "write")
    if request.query_params.get("multipart-manifest") == "delete":
        return await slo.delete_manifest(swift)
    restored = await versioning.delete_with_versions(swift, info)
    if restored is not None:
        return restored
    status = await swift.store.write_object("DELETE", swift.account, swift.container, swift.obj, {})
    if status == 404:
        raise SwiftError(404)
    if status >= 300:
        raise SwiftError(503)
    return empty(204)
