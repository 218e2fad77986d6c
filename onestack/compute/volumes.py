"""Compute's side of block storage: Cinder calls (volumes and the attachments API at 3.44)
and the bus form of a block device mapping.

The API reserves attachments and creates boot volumes; agents connect, plug and complete
them; the conductor records the outcome and gives everything back when a server goes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from onestack.compute.drivers.base import BlockDevice
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.core.client import ServiceClient

SERVICE = "block-storage"
# The attachments API with os-complete; 3.67 lets user-token calls leave the project out.
VERSION_HEADERS = {"OpenStack-API-Version": "volume 3.67"}
DEVICE_LETTERS = "bcdefghijklmnopqrstuvwxyz"


class VolumeServiceError(Exception):
    """Block storage refused a request: its status and its message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _message(body: Any, fallback: str) -> str:
    """The message of a Cinder error body ``{"badRequest": {"message": ...}}``."""
    if isinstance(body, dict):
        for value in body.values():
            if isinstance(value, dict) and value.get("message"):
                return str(value["message"])
    return fallback


class Cinder:
    """The block storage API as compute calls it: with the service account (admin), or
    with a user's token for what the user owns (boot volumes)."""

    def __init__(self, client: ServiceClient):
        self.client = client

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        token: str | None = None,
        project: str | None = None,
    ) -> Any:
        if token is None:
            response = await self.client.request(
                SERVICE, method, path, json=json, headers=VERSION_HEADERS
            )
        else:
            # The catalog's URL names the service project: a user's call names the user's.
            root = (await self.client.endpoint(SERVICE)).rsplit("/", 1)[0]
            response = await self.client.http.request(
                method,
                f"{root}/{project}{path}",
                json=json,
                headers={"X-Auth-Token": token, **VERSION_HEADERS},
            )
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            fallback = f"block storage answered {response.status_code}"
            raise VolumeServiceError(response.status_code, _message(body, fallback))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def volume(self, volume_id: str) -> dict[str, Any] | None:
        """A volume of any project, or None when there is none."""
        try:
            found = await self._send("GET", f"/volumes/{volume_id}")
        except VolumeServiceError as exc:
            if exc.status == 404:
                return None
            raise
        volume: dict[str, Any] = found["volume"]
        return volume

    async def create_volume(
        self, body: dict[str, Any], *, token: str, project: str
    ) -> dict[str, Any]:
        """Create a volume as the user (their quota, their project)."""
        answer = await self._send(
            "POST", "/volumes", json={"volume": body}, token=token, project=project
        )
        created: dict[str, Any] = answer["volume"]
        return created

    async def delete_volume(self, volume_id: str) -> None:
        """Delete a volume; one already gone is fine."""
        try:
            await self._send("DELETE", f"/volumes/{volume_id}")
        except VolumeServiceError as exc:
            if exc.status != 404:
                raise

    async def wait_status(
        self, volume_id: str, wanted: tuple[str, ...], timeout: float
    ) -> dict[str, Any]:
        """Poll until the volume's status is one of ``wanted``; fail on ``error*``."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            volume = await self.volume(volume_id)
            if volume is None:
                raise VolumeServiceError(404, f"Volume {volume_id} could not be found.")
            status = str(volume.get("status"))
            if status in wanted:
                return volume
            if status.startswith("error"):
                raise VolumeServiceError(409, f"Volume {volume_id} is in status {status}.")
            if time.monotonic() > deadline:
                raise VolumeServiceError(
                    409,
                    f"Volume {volume_id} did not become {'/'.join(wanted)} "
                    f"within {timeout:g} s (status {status}).",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    async def create_snapshot(
        self, volume_id: str, name: str, description: str, *, token: str, project: str
    ) -> dict[str, Any]:
        """Snapshot a volume as the user, in use or not (``force``), as Nova's createImage
        of a volume-backed server does."""
        body = {"volume_id": volume_id, "force": True, "name": name, "description": description}
        answer = await self._send(
            "POST", "/snapshots", json={"snapshot": body}, token=token, project=project
        )
        snapshot: dict[str, Any] = answer["snapshot"]
        return snapshot

    async def wait_snapshot(
        self, snapshot_id: str, timeout: float, *, token: str, project: str
    ) -> dict[str, Any]:
        """Poll the user's snapshot until it is available; fail on ``error`` or timeout."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            found = await self._send(
                "GET", f"/snapshots/{snapshot_id}", token=token, project=project
            )
            snapshot: dict[str, Any] = found["snapshot"]
            status = str(snapshot.get("status"))
            if status == "available":
                return snapshot
            if status.startswith("error"):
                raise VolumeServiceError(409, f"Snapshot {snapshot_id} is in status {status}.")
            if time.monotonic() > deadline:
                raise VolumeServiceError(
                    409, f"Snapshot {snapshot_id} was not available within {timeout:g} s."
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    async def delete_snapshot(self, snapshot_id: str, *, token: str, project: str) -> None:
        """Delete the user's snapshot; one already gone is fine."""
        try:
            await self._send("DELETE", f"/snapshots/{snapshot_id}", token=token, project=project)
        except VolumeServiceError as exc:
            if exc.status != 404:
                raise

    async def create_attachment(
        self, volume_id: str, instance_uuid: str, connector: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Reserve the volume for the server (and connect it when ``connector`` is given)."""
        body: dict[str, Any] = {"volume_uuid": volume_id, "instance_uuid": instance_uuid}
        if connector is not None:
            body["connector"] = connector
        answer = await self._send("POST", "/attachments", json={"attachment": body})
        attachment: dict[str, Any] = answer["attachment"]
        return attachment

    async def connect(self, attachment_id: str, connector: dict[str, Any]) -> dict[str, Any]:
        """Give the attachment this host's connector; answers the connection info."""
        answer = await self._send(
            "PUT", f"/attachments/{attachment_id}", json={"attachment": {"connector": connector}}
        )
        info: dict[str, Any] = answer["attachment"]["connection_info"]
        return info

    async def complete(self, attachment_id: str) -> None:
        """The guest has the disk: the volume becomes in-use."""
        await self._send("POST", f"/attachments/{attachment_id}/action", json={"os-complete": None})

    async def migrate_volume_completion(self, old_id: str, new_id: str, error: bool) -> str:
        """Tell block storage the swap it asked for (migrating an in-use volume) ended; the
        id the attachment keeps, as it answers."""
        answer = await self._send(
            "POST",
            f"/volumes/{old_id}/action",
            json={"os-migrate_volume_completion": {"new_volume": new_id, "error": error}},
        )
        return str((answer or {}).get("save_volume_id") or new_id)

    async def delete_attachment(self, attachment_id: str) -> None:
        """End the attachment (and its export); one already gone is fine."""
        try:
            await self._send("DELETE", f"/attachments/{attachment_id}")
        except VolumeServiceError as exc:
            if exc.status != 404:
                raise


def next_device(used: set[str], wanted: str | None = None) -> str:
    """A free ``/dev/vdX`` (``vda`` is the root disk): ``wanted`` when it is free."""
    if wanted and wanted.startswith("/dev/") and wanted not in used and wanted != "/dev/vda":
        return wanted
    for letter in DEVICE_LETTERS:
        name = f"/dev/vd{letter}"
        if name not in used:
            return name
    raise ValueError("no free device name")


def bdm_payload(row: BlockDeviceMapping) -> dict[str, Any]:
    """The bus form of a mapping, for agents."""
    return {
        "uuid": row.uuid,
        "volume_id": row.volume_id,
        "attachment_id": row.attachment_id,
        "device_name": row.device_name,
        "boot_index": row.boot_index,
        "source_type": row.source_type,
        "delete_on_termination": row.delete_on_termination,
        "status": row.status,
        "connection_info": row.connection_info,
    }


def block_device(bdm: dict[str, Any], info: dict[str, Any] | None = None) -> BlockDevice:
    """The driver's view of a mapping (with ``info`` when it was just connected)."""
    return BlockDevice(
        volume_id=bdm["volume_id"],
        mountpoint=bdm["device_name"],
        connection_info=info if info is not None else (bdm.get("connection_info") or {}),
        boot_index=bdm.get("boot_index"),
        delete_on_termination=bool(bdm.get("delete_on_termination")),
    )
