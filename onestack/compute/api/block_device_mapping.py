"""``block_device_mapping_v2`` of server create: boot from volume and volumes at boot.

Checked before quota is taken (``plan``); the volumes the mapping asks to create (from an
image, a snapshot, or blank) are created with the caller's token, so they are the
project's and count against its volume quota, while the servers' rows are written
(``record``). The agent attaches them when it builds the server; the conductor gives them
back when the server is deleted (deleted when ``delete_on_termination``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from onestack.compute.api import volume_backed
from onestack.compute.api.common import as_bool, as_int, at_least, caller, service
from onestack.compute.api.remote import image_of
from onestack.compute.api.volume_attachments import owned_volume, volume_error
from onestack.compute.models import Instance
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.compute.volumes import Cinder, VolumeServiceError, next_device
from onestack.core.asgi.errors import BadRequest

SOURCES = ("image", "volume", "snapshot", "blank")


@dataclass
class PlannedDevice:
    """One volume a new server gets."""

    source_type: str
    uuid: str | None
    volume_size: int | None
    boot_index: int | None
    delete_on_termination: bool
    device_name: str | None
    tag: str | None


def _entry(request: Request, item: Any, requested: bool = True) -> PlannedDevice | None:
    """One mapping entry checked; ``requested`` is False for those an image defines (their
    tags come from the snapshotted server, whatever this request's microversion)."""
    if not isinstance(item, dict):
        raise BadRequest("Invalid input for field/attribute block_device_mapping_v2.")
    source = item.get("source_type", "volume" if item.get("volume_id") else None)
    destination = item.get("destination_type", "volume" if source == "volume" else "local")
    if source not in SOURCES or destination not in ("volume", "local"):
        raise BadRequest(f"Invalid block device mapping: source_type {source!r}, "
                         f"destination_type {destination!r}.")  # fmt: skip
    if destination == "local":
        # The image root disk, or ephemeral and swap disks the flavor gives.
        return None
    boot_index = item.get("boot_index")
    if boot_index in (None, "", "none"):
        boot = None
    else:
        boot = as_int(boot_index, "boot_index", minimum=None)
        boot = None if boot < 0 else boot
    ident = item.get("uuid") or item.get("volume_id") or item.get("snapshot_id")
    if source != "blank" and not isinstance(ident, str):
        raise BadRequest(f"Invalid block device mapping: a {source} source needs its uuid.")
    size = None
    if source in ("image", "blank") or item.get("volume_size") is not None:
        if item.get("volume_size") is None:
            raise BadRequest("Invalid block device mapping: volume_size is required to "
                             f"create a volume from source_type {source}.")  # fmt: skip
        size = as_int(item["volume_size"], "volume_size", minimum=1)
    tag = item.get("tag")
    if tag is not None and (
        (requested and not at_least(request, "2.42")) or not isinstance(tag, str)
    ):
        raise BadRequest("Invalid input for field/attribute tag.")
    device_name = item.get("device_name")
    return PlannedDevice(
        source_type=source,
        uuid=ident if isinstance(ident, str) else None,
        volume_size=size,
        boot_index=boot,
        delete_on_termination=as_bool(
            item.get("delete_on_termination", False), "delete_on_termination"
        ),
        device_name=device_name if isinstance(device_name, str) else None,
        tag=tag,
    )


async def _image_mappings(
    request: Request, image: dict[str, Any] | None, mapping: list[Any] | None
) -> list[dict[str, Any]]:
    """The mappings the boot image defines (an image of a volume-backed server): the image
    is ``imageRef``'s, or the one a requested image-to-volume boot device names."""
    if image is None:
        image_ref = next(
            (item.get("uuid") for item in mapping or []
             if isinstance(item, dict) and item.get("source_type") == "image"
             and str(item.get("boot_index")) == "0"),
            None,
        )  # fmt: skip
        if not isinstance(image_ref, str) or not image_ref:
            return []
        image = await image_of(request, image_ref)
    return volume_backed.defined_mappings(image)


async def plan(
    request: Request,
    body: dict[str, Any],
    project_id: str,
    count: int,
    image: dict[str, Any] | None = None,
) -> list[PlannedDevice]:
    """The volumes ``body`` maps, merged with those its boot ``image`` defines, checked
    (400 for bad mappings, unusable sources)."""
    mapping = body.get("block_device_mapping_v2")
    if mapping is not None and not isinstance(mapping, list):
        raise BadRequest("Invalid input for field/attribute block_device_mapping_v2.")
    defined = await _image_mappings(request, image, mapping)
    asked = {id(item) for item in mapping or []}
    merged = volume_backed.merge(mapping or [], defined)
    planned = [
        p for p in (_entry(request, item, id(item) in asked) for item in merged) if p is not None
    ]
    boots = [p for p in planned if p.boot_index == 0]
    if len(boots) > 1:
        raise BadRequest("Boot sequence for the instance and image/block device mapping "
                         "combination is not valid.")  # fmt: skip
    if not body.get("imageRef") and not boots:
        raise BadRequest("Missing imageRef attribute")
    for device in planned:
        if device.source_type == "volume":
            if count > 1:
                raise BadRequest("Unable to launch multiple instances with a single "
                                 "configured volume.")  # fmt: skip
            volume = await owned_volume(request, device.uuid, project_id)
            if volume.get("status") != "available" and not volume.get("multiattach"):
                raise BadRequest(f"Invalid volume: volume {volume['id']} status must be "
                                 f"available, but is {volume.get('status')}.")  # fmt: skip
        elif device.source_type == "image":
            await image_of(request, str(device.uuid))
    return planned


async def record(
    request: Request, session: AsyncSession, servers: list[Instance], planned: list[PlannedDevice]
) -> None:
    """Create the volumes each new server needs and write its mappings; on failure the
    volumes created so far are deleted and the error raised."""
    if not planned:
        return
    cinder = Cinder(service(request).client)
    token = request.headers.get("x-auth-token", "")
    project = caller(request).project_id or ""
    created: list[str] = []
    try:
        for server in servers:
            used: set[str] = set()
            for device in sorted(planned, key=lambda p: (p.boot_index is None, p.boot_index)):
                volume_id = device.uuid
                if device.source_type != "volume":
                    body: dict[str, Any] = {"size": device.volume_size, "name": ""}
                    if device.source_type == "image":
                        body["imageRef"] = device.uuid
                    elif device.source_type == "snapshot":
                        body["snapshot_id"] = device.uuid
                    volume = await cinder.create_volume(body, token=token, project=project)
                    volume_id = str(volume["id"])
                    created.append(volume_id)
                name = (
                    "/dev/vda" if device.boot_index == 0 else next_device(used, device.device_name)
                )
                used.add(name)
                session.add(
                    BlockDeviceMapping(
                        instance_uuid=server.uuid,
                        volume_id=volume_id,
                        device_name=name,
                        boot_index=device.boot_index,
                        source_type=device.source_type,
                        image_id=device.uuid if device.source_type == "image" else None,
                        volume_size=device.volume_size,
                        delete_on_termination=device.delete_on_termination,
                        tag=device.tag,
                        status="attaching",
                    )
                )
    except BaseException as exc:
        for volume_id in created:
            try:
                await cinder.wait_status(volume_id, ("available", "error"), 60)
                await cinder.delete_volume(volume_id)
            except VolumeServiceError:
                continue
        if isinstance(exc, VolumeServiceError):
            raise volume_error(exc) from None
        raise
