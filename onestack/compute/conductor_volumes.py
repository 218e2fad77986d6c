"""The conductor's part in volumes: it answers agents with a server's block device mappings,
records what they report about attaching and detaching, and gives a deleted server's volumes
back to block storage (detached, or deleted when mapped with ``delete_on_termination``)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select, update

from onestack.compute.actions import record_event
from onestack.compute.models import Instance, InstanceMetadata
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.compute.payloads import instance_payload
from onestack.compute.service import ComputeService
from onestack.compute.volumes import Cinder, bdm_payload
from onestack.core.db import Database

log = logging.getLogger(__name__)

# Seconds a deleted server's boot volume may take to become deletable after its detach.
RELEASE_WAIT = 60.0


async def mappings_of(db: Database, uuid: str) -> list[BlockDeviceMapping]:
    """The mappings of server ``uuid``, the boot volume first."""
    async with db.session() as session:
        rows = (
            await session.execute(
                select(BlockDeviceMapping)
                .where(BlockDeviceMapping.instance_uuid == uuid)
                .order_by(BlockDeviceMapping.boot_index.is_(None), BlockDeviceMapping.id)
            )
        ).scalars()
        return list(rows)


class VolumeReports:
    """Bus handlers of the ``conductor`` topic about volumes (mixed into the Conductor)."""

    service: ComputeService
    db: Database

    async def block_devices_of(self, uuid: str, with_instance: bool = True) -> dict[str, Any]:
        """A server's mappings (agents booting, starting, extending) and, when asked, its
        bus payload."""
        if not with_instance:
            rows = await mappings_of(self.db, uuid)
            return {"instance": None, "block_devices": [bdm_payload(row) for row in rows]}
        async with self.db.session() as session:
            inst = (
                await session.execute(select(Instance).where(Instance.uuid == uuid))
            ).scalar_one_or_none()
            metadata = {
                row.key: row.value
                for row in (
                    await session.execute(
                        select(InstanceMetadata).where(InstanceMetadata.instance_uuid == uuid)
                    )
                ).scalars()
            }
        payload = instance_payload(inst, metadata) if inst is not None else None
        return {
            "instance": payload,
            "block_devices": [bdm_payload(row) for row in await mappings_of(self.db, uuid)],
        }

    async def unsettled_block_devices(self, host: str) -> list[dict[str, Any]]:
        """Mappings of ``host``'s servers an attach or detach left half done (an agent
        restarting finishes them), each with its server's payload."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(BlockDeviceMapping, Instance)
                    .join(Instance, Instance.uuid == BlockDeviceMapping.instance_uuid)
                    .where(
                        Instance.host == host,
                        Instance.deleted.is_(False),
                        BlockDeviceMapping.status.in_(("attaching", "detaching", "swapping")),
                        BlockDeviceMapping.attachment_id.is_not(None),
                    )
                )
            ).all()
        return [{"instance": instance_payload(inst), "bdm": bdm_payload(bdm)} for bdm, inst in rows]

    async def _set_mapping(self, bdm_uuid: str, **values: Any) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(BlockDeviceMapping)
                .where(BlockDeviceMapping.uuid == bdm_uuid)
                .values(**values)
            )

    async def _drop_mapping(self, bdm_uuid: str) -> None:
        async with self.db.session() as session:
            await session.execute(
                delete(BlockDeviceMapping).where(BlockDeviceMapping.uuid == bdm_uuid)
            )

    async def volume_attached(
        self,
        uuid: str,
        bdm_uuid: str,
        request_id: str,
        host: str,
        connection_info: dict[str, Any],
    ) -> None:
        """The agent plugged the volume and block storage completed the attachment."""
        await self._set_mapping(bdm_uuid, status="attached", connection_info=connection_info)
        await record_event(self.db, uuid, request_id, "compute_attach_volume", host=host)

    async def volume_attach_failed(
        self, uuid: str, bdm_uuid: str, request_id: str, host: str, error: str
    ) -> None:
        """The attach failed and its attachment was deleted: the mapping goes too."""
        await self._drop_mapping(bdm_uuid)
        await record_event(
            self.db, uuid, request_id, "compute_attach_volume", host=host, error=error
        )

    async def volume_detached(self, uuid: str, bdm_uuid: str, request_id: str, host: str) -> None:
        """The volume left the guest and its attachment is deleted."""
        await self._drop_mapping(bdm_uuid)
        await record_event(self.db, uuid, request_id, "compute_detach_volume", host=host)

    async def volume_detach_failed(
        self, uuid: str, bdm_uuid: str, request_id: str, host: str, error: str
    ) -> None:
        """The guest kept the volume: it stays attached."""
        await self._set_mapping(bdm_uuid, status="attached")
        await record_event(
            self.db, uuid, request_id, "compute_detach_volume", host=host, error=error
        )

    async def volume_swapped(
        self,
        uuid: str,
        bdm_uuid: str,
        request_id: str,
        host: str,
        volume_id: str,
        attachment_id: str,
        connection_info: dict[str, Any],
    ) -> None:
        """The guest's disk moved to the new volume: the mapping names it now."""
        await self._set_mapping(bdm_uuid, volume_id=volume_id, attachment_id=attachment_id,
                                connection_info=connection_info, status="attached")  # fmt: skip
        await record_event(self.db, uuid, request_id, "compute_swap_volume", host=host)

    async def volume_swap_failed(
        self, uuid: str, bdm_uuid: str, request_id: str, host: str, error: str
    ) -> None:
        """The guest stayed on the old volume: it stays attached."""
        await self._set_mapping(bdm_uuid, status="attached")
        await record_event(self.db, uuid, request_id, "compute_swap_volume", host=host, error=error)

    async def boot_volumes_connected(self, uuid: str, devices: list[dict[str, Any]]) -> None:
        """A build connected (or, on failure, gave back) the server's boot-time volumes."""
        for device in devices:
            await self._set_mapping(
                device["uuid"],
                attachment_id=device.get("attachment_id"),
                connection_info=device.get("connection_info"),
                status=device.get("status", "attached"),
            )

    async def release_volumes(self, uuid: str) -> None:
        """A deleted server's volumes: attachments deleted, mapped volumes deleted."""
        rows = await mappings_of(self.db, uuid)
        if not rows:
            return
        cinder = Cinder(self.service.client)
        for row in rows:
            try:
                if row.attachment_id:
                    await cinder.delete_attachment(row.attachment_id)
                if row.delete_on_termination:
                    await cinder.wait_status(row.volume_id, ("available", "error"), RELEASE_WAIT)
                    await cinder.delete_volume(row.volume_id)
            except Exception as exc:
                log.warning("volume %s of deleted server %s: %s", row.volume_id, uuid, exc)
            await self._drop_mapping(row.uuid)
