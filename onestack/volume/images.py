"""Moving disk images between the image service and local files, streamed, for agents."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from onestack.core.client import ServiceClient
from onestack.volume.drivers.base import VolumeDriverError

CHUNK = 4 << 20


async def image_meta(client: ServiceClient, image_id: str) -> dict[str, Any]:
    """The image's record (the service account is admin: it sees every image)."""
    response = await client.request("image", "GET", f"/v2/images/{image_id}")
    if response.status_code != 200:
        raise VolumeDriverError(f"image {image_id} could not be read: {response.status_code}")
    meta: dict[str, Any] = response.json()
    return meta


async def download(client: ServiceClient, image_id: str, dest: Path) -> None:
    """Stream the image's data into ``dest``."""
    url = f"{await client.endpoint('image')}/v2/images/{image_id}/file"
    headers = {"X-Auth-Token": await client.token()}
    async with client.http.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            raise VolumeDriverError(
                f"image {image_id} data could not be read: {response.status_code}"
            )
        with open(dest, "wb") as handle:
            async for chunk in response.aiter_bytes(CHUNK):
                handle.write(chunk)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


async def upload(client: ServiceClient, image_id: str, source: Path) -> None:
    """Stream ``source`` as the image's data."""
    url = f"{await client.endpoint('image')}/v2/images/{image_id}/file"
    headers = {
        "X-Auth-Token": await client.token(),
        "Content-Type": "application/octet-stream",
        "Content-Length": str(source.stat().st_size),
    }
    try:
        response = await client.http.put(url, headers=headers, content=_file_chunks(source))
    except httpx.HTTPError as exc:
        raise VolumeDriverError(f"upload to image {image_id} failed: {exc}") from None
    if response.status_code != 204:
        raise VolumeDriverError(
            f"upload to image {image_id} failed: {response.status_code} {response.text[:200]}"
        )


async def delete(client: ServiceClient, image_id: str) -> None:
    """Remove an image whose upload failed (best effort)."""
    with contextlib.suppress(httpx.HTTPError):
        await client.request("image", "DELETE", f"/v2/images/{image_id}")
