"""Images of volume-backed servers, as Nova makes and boots them.

``createImage`` of a server whose root disk is a volume copies no disk: each volume of the
server is snapshotted in block storage (forced, since they are in use), and the image is
only a record (no data, ``raw``/``bare``, active) whose ``block_device_mapping`` property
lists those snapshots with ``bdm_v2`` and ``root_device_name``. A server booted from such
an image gets new volumes made from the snapshots (``merge``). The snapshots belong to the
caller's project and outlive the image, as in Nova.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from sqlalchemy import select
from starlette.requests import Request

from onestack.compute.api.common import caller, service
from onestack.compute.api.remote import as_caller
from onestack.compute.api.volume_attachments import volume_error
from onestack.compute.models import Instance
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.compute.volumes import Cinder, VolumeServiceError
from onestack.core.asgi.errors import APIError, BadRequest

ROOT_DEVICE = "/dev/vda"
# How long createImage waits for the volume snapshots before it gives up (and removes them).
SNAPSHOT_TIMEOUT = 300.0


async def mappings_of(request: Request, server: Instance) -> list[BlockDeviceMapping]:
    """The server's volumes, boot volume first."""
    async with service(request).db.session() as session:
        rows = (
            await session.execute(
                select(BlockDeviceMapping)
                .where(BlockDeviceMapping.instance_uuid == server.uuid)
                .order_by(BlockDeviceMapping.id)
            )
        ).scalars()
        return sorted(rows, key=lambda r: (r.boot_index is None, r.boot_index or 0, r.id))


def is_volume_backed(server: Instance, mappings: list[BlockDeviceMapping]) -> bool:
    """Nova's test: no image, or a volume as the boot device."""
    return not server.image_ref or any(row.boot_index == 0 for row in mappings)


class VolumeSnapshots:
    """The snapshots one createImage takes of a server's volumes, removed again on failure."""

    def __init__(self, request: Request):
        self.cinder = Cinder(service(request).client)
        self.token = request.headers.get("x-auth-token", "")
        self.project = caller(request).project_id or ""
        self.taken: list[str] = []

    async def take(self, mappings: list[BlockDeviceMapping], name: str) -> list[dict[str, Any]]:
        """Snapshot every mapped volume and wait for them: the image's mapping entries."""
        entries: list[tuple[BlockDeviceMapping, str]] = []
        auth = {"token": self.token, "project": self.project}
        try:
            for row in mappings:
                snapshot = await self.cinder.create_snapshot(
                    row.volume_id, f"snapshot for {name}", "", **auth
                )
                self.taken.append(str(snapshot["id"]))
                entries.append((row, str(snapshot["id"])))
            sizes = {}
            for snapshot_id in self.taken:
                ready = await self.cinder.wait_snapshot(snapshot_id, SNAPSHOT_TIMEOUT, **auth)
                sizes[snapshot_id] = int(ready["size"])
        except VolumeServiceError as exc:
            raise volume_error(exc) from None
        return [
            _image_mapping(row, snapshot_id, sizes[snapshot_id]) for row, snapshot_id in entries
        ]

    async def remove(self) -> None:
        """Delete the snapshots taken (once settled: a creating snapshot cannot go)."""
        auth = {"token": self.token, "project": self.project}
        for snapshot_id in self.taken:
            with contextlib.suppress(VolumeServiceError):
                await self.cinder.wait_snapshot(snapshot_id, SNAPSHOT_TIMEOUT, **auth)
            try:
                await self.cinder.delete_snapshot(snapshot_id, **auth)
            except VolumeServiceError:
                continue


def _image_mapping(row: BlockDeviceMapping, snapshot_id: str, size: int) -> dict[str, Any]:
    """A block device mapping as Nova stores it in an image: the volume's snapshot."""
    return {
        "source_type": "snapshot",
        "destination_type": "volume",
        "snapshot_id": snapshot_id,
        "volume_id": None,
        "image_id": None,
        "volume_size": size,
        "delete_on_termination": bool(row.delete_on_termination),
        "boot_index": row.boot_index,
        "device_name": row.device_name,
        "device_type": "disk",
        "disk_bus": "virtio",
        "guest_format": None,
        "no_device": None,
        "tag": row.tag,
        "volume_type": None,
    }


def image_properties(mapping: list[dict[str, Any]]) -> dict[str, str]:
    """The image properties that make a boot recreate the volumes (strings, as Glance keeps
    them)."""
    return {
        "block_device_mapping": json.dumps(mapping),
        "bdm_v2": "True",
        "root_device_name": ROOT_DEVICE,
    }


async def activate_empty(request: Request, image_id: str) -> None:
    """Upload zero bytes, so the data-less image is active (what Nova does for Glance v2)."""
    response = await as_caller(
        request, "image", "PUT", f"/v2/images/{image_id}/file", content=b"",
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    if response.status_code != 204:
        await as_caller(request, "image", "DELETE", f"/v2/images/{image_id}")
        raise APIError(f"The image service refused the snapshot: {response.text[:200]}",
                       status=400 if response.status_code < 500 else 503)  # fmt: skip


def defined_mappings(image: dict[str, Any]) -> list[dict[str, Any]]:
    """The v2 block device mappings an image carries (none for an ordinary image)."""
    if str(image.get("bdm_v2", "")).lower() != "true":
        return []
    listed = image.get("block_device_mapping")
    if isinstance(listed, str):
        try:
            listed = json.loads(listed)
        except ValueError:
            raise BadRequest(
                f"Image {image.get('id')} has an unreadable block_device_mapping."
            ) from None
    if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
        raise BadRequest(f"Image {image.get('id')} has an unreadable block_device_mapping.")
    return [item for item in listed if not item.get("no_device")]


def merge(requested: list[Any], defined: list[dict[str, Any]]) -> list[Any]:
    """Nova's merge of an image's mappings with the request's: when the image brings a boot
    device, the request's image-to-volume boot entry goes (it names the data-less image);
    a requested device replaces the image's of the same device name."""
    if not defined:
        return requested
    if any(_boot_index(item) == 0 for item in defined):
        requested = [
            item for item in requested
            if not (isinstance(item, dict) and _boot_index(item) == 0
                    and item.get("source_type") == "image")
        ]  # fmt: skip
    names = {item.get("device_name") for item in requested if isinstance(item, dict)}
    kept = [
        item for item in defined if not item.get("device_name") or item["device_name"] not in names
    ]
    return [*kept, *requested]


def _boot_index(item: dict[str, Any]) -> int | None:
    try:
        return int(item.get("boot_index"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
