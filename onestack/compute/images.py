"""Image data for the agent: fetch an image to a file, upload a snapshot's disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from onestack.core.client import ServiceClient


class ImageError(Exception):
    """The image service refused a request; the message says why."""


class ImageTransfer:
    """Streams image data to and from the image service with the service account."""

    def __init__(self, client: ServiceClient):
        self.client = client

    async def fetch(self, image_id: str, path: Path) -> None:
        """Write image ``image_id``'s data to ``path``."""
        url = f"{await self.client.endpoint('image')}/v2/images/{image_id}/file"
        headers = {"X-Auth-Token": await self.client.token()}
        async with self.client.http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise ImageError(f"image {image_id} has no data ({response.status_code})")
            with path.open("wb") as out:
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)

    async def upload(self, image_id: str, path: Path, disk_format: str) -> None:
        """Upload ``path`` as the data of the queued image ``image_id`` (its disk format
        corrected first when the hypervisor produced another)."""
        found = await self.client.request("image", "GET", f"/v2/images/{image_id}")
        if found.status_code != 200:
            raise ImageError(f"snapshot image {image_id} is gone ({found.status_code})")
        if found.json().get("disk_format") != disk_format:
            patch = [{"op": "replace", "path": "/disk_format", "value": disk_format}]
            fixed = await self.client.request(
                "image",
                "PATCH",
                f"/v2/images/{image_id}",
                json=patch,
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
            )
            if fixed.status_code != 200:
                raise ImageError(f"snapshot image {image_id}: {fixed.text[:200]}")

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as data:
                while block := data.read(1 << 20):
                    yield block

        response = await self.client.request(
            "image",
            "PUT",
            f"/v2/images/{image_id}/file",
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code != 204:
            raise ImageError(f"uploading snapshot {image_id}: {response.text[:200]}")

    async def delete(self, image_id: str) -> None:
        """Remove an image (a shelved server's snapshot after unshelve); gone is fine."""
        await self.client.request("image", "DELETE", f"/v2/images/{image_id}")
