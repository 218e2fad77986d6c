"""Image data: ``PUT/GET /file`` (streamed both ways), ``PUT /stage`` and ``POST /import``.

An upload moves the image queued → saving → active. The bytes stream to the
store in bounded batches while a worker thread hashes them (MD5 and SHA-512)
and feeds the format inspector, so memory stays flat for any size. Only a
safe image of the declared format becomes active; anything else is removed
from the store, the image goes back to queued (client errors) or to killed
(the stream broke), and the size quota is never charged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import update
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from onestack.core.asgi.errors import (
    APIError,
    BadRequest,
    Conflict,
    Forbidden,
    PayloadTooLarge,
)
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import affected, utcnow
from onestack.core.quota import QuotaExceeded
from onestack.image.api.common import caller, enforce, get_image, owner_target, service
from onestack.image.inspection import InspectionError, SizeExceeded, UploadInspector, virtual_size
from onestack.image.models import Image
from onestack.image.service import MIB, ImageService

log = logging.getLogger(__name__)
routes = RouteTable()

BATCH = 4 * MIB
QUEUED = 4
IMPORT_METHODS = ["glance-direct", "copy-image", "web-download"]


class RangeNotSatisfiable(APIError):
    status = 416


async def _claim(images: ImageService, image_id: str, expected: str, new: str) -> bool:
    """Move the image from ``expected`` to ``new`` status if nobody else did first."""
    async with images.db.session() as session:
        result = await session.execute(
            update(Image)
            .where(Image.id == image_id, Image.status == expected)
            .values(status=new, updated_at=utcnow())
        )
        return affected(result) == 1


async def _set_status(images: ImageService, image_id: str, status: str) -> None:
    async with images.db.session() as session:
        await session.execute(
            update(Image).where(Image.id == image_id).values(status=status, updated_at=utcnow())
        )


async def _receive(
    source: AsyncIterator[bytes], batches: asyncio.Queue[list[bytes] | None]
) -> None:
    """Pull the request body into batches of chunks without waiting for the disk: uvicorn
    stops reading the socket while a request's unread body exceeds 64 KiB."""
    pending: list[bytes] = []
    size = 0
    async for chunk in source:
        pending.append(chunk)
        size += len(chunk)
        if size >= BATCH:
            await batches.put(pending)
            pending, size = [], 0
    if pending:
        await batches.put(pending)
    await batches.put(None)


async def _batches(
    source: AsyncIterator[bytes], inspector: UploadInspector
) -> AsyncIterator[bytes]:
    """``source`` in batches: received ahead (at most ``QUEUED`` batches), each hashed and
    inspected off the event loop while the store writes it, checked before the next goes out."""
    queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize=QUEUED)
    receiver = asyncio.ensure_future(_receive(source, queue))
    checking: asyncio.Future[None] | None = None
    try:
        while True:
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait({getting, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                receiver.result()  # the body broke off: raise why
                continue
            pieces = getting.result()
            if pieces is None:
                break
            # Joined off the event loop: a big join releases the GIL, and getting it back
            # from the hashing threads would stall the socket reads for a switch interval.
            batch = await asyncio.to_thread(b"".join, pieces)
            if checking is not None:
                await checking
            checking = asyncio.ensure_future(asyncio.to_thread(inspector.feed, batch))
            yield batch
        if checking is not None:
            await checking
    finally:
        # Closed early (the store failed, or the client left): stop and collect the helpers.
        receiver.cancel()
        for task in (receiver, checking):
            if task is not None and task.done() and not task.cancelled():
                task.exception()
            elif task is not None:
                task.cancel()


def _declared_md5(request: Request) -> str | None:
    """An MD5 the client sent to check the upload against (``Content-MD5``: base64 or hex)."""
    value = request.headers.get("content-md5")
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9a-fA-F]{32}", value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        raise BadRequest("Content-MD5 must be an MD5 digest, base64 or hex.") from None


async def store_data(
    images: ImageService, image: Image, source: AsyncIterator[bytes], declared_md5: str | None
) -> None:
    """Write, verify and activate an image whose status the caller moved to saving/importing.

    On any failure the stored bytes are removed before the error propagates.
    """
    usage = await images.quotas.usage(image.owner or "")
    size_quota = usage["image_size_total"]
    max_size = images.max_image_size
    if size_quota["limit"] >= 0:
        room = size_quota["limit"] - size_quota["in_use"] - size_quota["reserved"]
        max_size = min(max_size, max(room, 0) * MIB)
    inspector = UploadInspector(image.disk_format, max_size)
    store = images.stores[images.default_store]
    location, size = await store.add(image.id, _batches(source, inspector))
    try:
        checksum, sha512, detected = await asyncio.to_thread(inspector.finish)
        if declared_md5 and declared_md5 != checksum:
            raise BadRequest(
                f"The uploaded data's MD5 {checksum} does not match Content-MD5 {declared_md5}."
            )
        path = store.local_path(location)
        virtual = await virtual_size(path, str(detected), detected.virtual_size or size)
        reservation = await images.quotas.reserve(
            image.owner or "", {"image_size_total": -(-size // MIB)}
        )
        async with images.db.session() as session:
            result = await session.execute(
                update(Image)
                .where(Image.id == image.id, Image.status.in_(("saving", "importing")))
                .values(
                    status="active",
                    size=size,
                    virtual_size=virtual,
                    checksum=checksum,
                    os_hash_algo="sha512",
                    os_hash_value=sha512,
                    locations={store.name: location},
                    updated_at=utcnow(),
                )
            )
            activated = affected(result) == 1
        if activated:
            await images.quotas.commit(reservation)
        else:
            await images.quotas.rollback(reservation)
            raise Conflict(f"Image {image.id} was deleted or changed during the upload.")
    except BaseException:
        await store.delete(location)
        raise


def _client_error(exc: BaseException) -> APIError | None:
    """The 4xx an upload failure deserves, or None for a broken stream or store failure."""
    if isinstance(exc, SizeExceeded | QuotaExceeded):
        return PayloadTooLarge(str(exc))
    if isinstance(exc, InspectionError):
        return BadRequest(str(exc))
    if isinstance(exc, APIError) and exc.status < 500:
        return exc
    return None


@routes.put("/v2/images/{image_id}/file")
async def upload(request: Request) -> Response:
    images = service(request)
    async with images.db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
    enforce(request, "upload_image", owner_target(image))
    declared_md5 = _declared_md5(request)
    if not await _claim(images, image.id, "queued", "saving"):
        raise Conflict(
            f"Image status transition from {image.status} to saving is not allowed: "
            "data can only be uploaded to a queued image."
        )
    try:
        await store_data(images, image, request.stream(), declared_md5)
    except BaseException as exc:
        client_error = _client_error(exc)
        # A client mistake leaves the image queued for another try; a broken upload kills it.
        await _set_status(images, image.id, "queued" if client_error else "killed")
        if client_error is not None:
            raise client_error from None
        if isinstance(exc, ClientDisconnect):
            log.info("upload of %s ended early: the client went away", image.id)
            return Response(status_code=400)
        raise
    return Response(status_code=204)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end inclusive) of a single ``bytes=`` range; 416 if unsatisfiable."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"Invalid or multiple range {header!r}.")
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the image's {size} bytes.")
    return start, end


@routes.get("/v2/images/{image_id}/file")
async def download(request: Request) -> Response:
    images = service(request)
    context = caller(request)
    async with images.db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
    enforce(request, "download_image", owner_target(image))
    if image.status == "deactivated" and not context.is_admin:
        raise Forbidden(
            "The requested image has been deactivated. Image data download is forbidden."
        )
    if image.status not in ("active", "deactivated") or not image.locations or image.size is None:
        return Response(status_code=204)
    store_name, location = next(iter(image.locations.items()))
    store = images.stores[store_name]
    size = image.size
    wanted = _byte_range(request.headers.get("range"), size)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-MD5": image.checksum or "",
        "Accept-Ranges": "bytes",
    }
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(store.get(location), headers=headers, status_code=200)
    start, end = wanted
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        store.get(location, start, end - start + 1), headers=headers, status_code=206
    )


def _staged(images: ImageService, image_id: str) -> Path:
    return images.staging / image_id


@routes.put("/v2/images/{image_id}/stage")
async def stage(request: Request) -> Response:
    images = service(request)
    async with images.db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
    enforce(request, "upload_image", owner_target(image))
    if not await _claim(images, image.id, "queued", "uploading"):
        raise Conflict(f"Image {image.id} is {image.status}; only a queued image can be staged.")
    path = _staged(images, image.id)
    try:
        size = 0
        with path.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > images.max_image_size:
                    raise PayloadTooLarge(f"Staged data exceeds {images.max_image_size} bytes.")
                await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await _set_status(images, image.id, "queued")
        raise
    return Response(status_code=204)


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, BATCH):
            yield chunk


async def _import_staged(images: ImageService, image: Image) -> None:
    path = _staged(images, image.id)
    try:
        await store_data(images, image, _read_file(path), None)
    except Exception as exc:
        log.warning("import of image %s failed: %s", image.id, exc)
        # A failed import leaves the image queued again, its staged data gone.
        await _set_status(images, image.id, "queued")
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@routes.post("/v2/images/{image_id}/import")
async def import_image(request: Request) -> Response:
    images = service(request)
    body = await json_body(request)
    method = (body.get("method") or {}).get("name") if isinstance(body, dict) else None
    async with images.db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
    if method == "glance-direct":
        enforce(request, "upload_image", owner_target(image))
        if image.status != "uploading" or not _staged(images, image.id).exists():
            raise Conflict(f"Image {image.id} has no staged data: PUT it to /stage first.")
        if not await _claim(images, image.id, "uploading", "importing"):
            raise Conflict(f"Image {image.id} is already being imported.")
        image.status = "importing"
        task = asyncio.create_task(_import_staged(images, image))
        images.background.add(task)
        task.add_done_callback(images.background.discard)
        return Response(status_code=202)
    if method == "copy-image":
        enforce(request, "copy_image", owner_target(image))
        if image.status != "active":
            raise Conflict("Only an active image can be copied to other stores.")
        wanted = (
            set(body.get("stores") or [])
            if body.get("all_stores") is not True
            else set(images.stores)
        )
        unknown = wanted - set(images.stores)
        if unknown:
            raise BadRequest(f"Unknown stores: {', '.join(sorted(unknown))}.")
        missing = wanted - set(image.locations or {})
        if not missing:
            raise Conflict(
                f"Image {image.id} is already in stores: {', '.join(sorted(wanted)) or 'all'}."
            )
        raise Conflict(f"Copying to {', '.join(sorted(missing))} is not available in this cloud.")
    if method == "web-download":
        raise BadRequest(
            "Import method web-download is not available: this cloud has no outbound network."
        )
    raise BadRequest(f"Unknown import method {method!r}: use one of {', '.join(IMPORT_METHODS)}.")


@routes.get("/v2/info/import")
async def import_info(request: Request) -> Response:
    return JSONResponse(
        {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": ["glance-direct", "copy-image"],
            }
        }
    )


@routes.get("/v2/info/stores")
async def stores_info(request: Request) -> Response:
    images = service(request)
    return JSONResponse(
        {
            "stores": [
                {
                    "id": name,
                    "description": store.description,
                    **({"default": True} if name == images.default_store else {}),
                }
                for name, store in images.stores.items()
            ]
        }
    )
