"""The compute agent's volume work: Cinder's attachment workflow around the driver.

Attach: give the reserved attachment this host's connector, plug the connection info it
answers into the guest, complete the attachment (the volume goes in-use). Detach: unplug,
then delete the attachment. Swap: connect and complete the new volume's attachment, the
driver mirrors the guest's disk onto it and pivots, then the old attachment goes. A
failure gives back what was taken (the attachment of a failed attach or swap is
deleted). Boot volumes are connected before spawn and completed after it. The agent
never writes the mappings: it reports to the conductor, and reads them through it
(``block_devices_of``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from onestack.compute.drivers.base import BlockDevice, DriverError, PowerState
from onestack.compute.payloads import spec_of
from onestack.compute.volumes import Cinder, block_device

if TYPE_CHECKING:
    from onestack.compute.agent import ComputeAgent

log = logging.getLogger(__name__)

# Seconds a boot volume (created from an image) may take to become available.
BOOT_VOLUME_TIMEOUT = 600.0
PLUGGED_STATES = (PowerState.RUNNING, PowerState.PAUSED)


def describe(exc: BaseException) -> str:
    """A fault message for a failure."""
    return str(exc) or type(exc).__name__


class AgentVolumes:
    """Volume work of one compute agent."""

    def __init__(self, agent: ComputeAgent):
        self.agent = agent
        # Attachments a build connected and has not completed yet, by server.
        self._boot: dict[str, list[dict[str, Any]]] = {}

    @property
    def cinder(self) -> Cinder:
        if self.agent.client is None:
            raise DriverError("this agent has no service credentials to reach block storage")
        return Cinder(self.agent.client)

    async def connector(self, device_name: str) -> dict[str, Any]:
        """What block storage needs to export a volume to this host."""
        capacity = await self.agent.driver.host_capacity()
        return {
            "host": self.agent.host,
            "ip": capacity.host_ip,
            "initiator": None,
            "platform": "x86_64",
            "os_type": "linux",
            "multipath": False,
            "mountpoint": device_name,
        }

    async def _mappings(self, uuid: str, with_instance: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = await self.agent.conductor.call(
            "block_devices_of", uuid=uuid, with_instance=with_instance
        )
        return answer

    async def devices(self, uuid: str) -> list[BlockDevice]:
        """The connected volumes of a server (to plug when it starts again)."""
        answer = await self._mappings(uuid)
        return [
            block_device(bdm)
            for bdm in answer["block_devices"]
            if bdm["status"] == "attached" and bdm.get("connection_info")
        ]

    # ----- hot plug -----------------------------------------------------------------------

    async def attach(self, instance: dict[str, Any], bdm: dict[str, Any], request_id: str) -> None:
        """Connect, plug and complete one reserved attachment; report the outcome."""
        spec = spec_of(instance)
        agent = self.agent
        report = {"uuid": spec.uuid, "bdm_uuid": bdm["uuid"], "request_id": request_id,
                  "host": agent.host}  # fmt: skip
        try:
            info = await self.cinder.connect(
                bdm["attachment_id"], await self.connector(bdm["device_name"])
            )
            device = block_device(bdm, info)
            plugged = await agent.driver.power_state(spec) in PLUGGED_STATES
            if plugged:
                await agent.driver.attach_volume(spec, device)
            try:
                await self.cinder.complete(bdm["attachment_id"])
            except Exception:
                if plugged:
                    with contextlib.suppress(Exception):
                        await agent.driver.detach_volume(spec, device)
                raise
        except Exception as exc:
            error = describe(exc)
            log.warning("attaching volume %s to %s failed: %s", bdm["volume_id"], spec.uuid, error)
            with contextlib.suppress(Exception):
                await self.cinder.delete_attachment(bdm["attachment_id"])
            await agent.conductor.cast("volume_attach_failed", error=error, **report)
            return
        await agent.conductor.cast("volume_attached", connection_info=info, **report)

    async def detach(self, instance: dict[str, Any], bdm: dict[str, Any], request_id: str) -> None:
        """Unplug the volume and delete its attachment; report the outcome."""
        spec = spec_of(instance)
        agent = self.agent
        report = {"uuid": spec.uuid, "bdm_uuid": bdm["uuid"], "request_id": request_id,
                  "host": agent.host}  # fmt: skip
        try:
            if await agent.driver.power_state(spec) != PowerState.NOSTATE:
                await agent.driver.detach_volume(spec, block_device(bdm))
            if bdm.get("attachment_id"):
                await self.cinder.delete_attachment(bdm["attachment_id"])
        except Exception as exc:
            error = describe(exc)
            log.warning("detaching volume %s from %s failed: %s", bdm["volume_id"], spec.uuid,
                        error)  # fmt: skip
            await agent.conductor.cast("volume_detach_failed", error=error, **report)
            return
        await agent.conductor.cast("volume_detached", **report)

    async def swap(
        self,
        instance: dict[str, Any],
        bdm: dict[str, Any],
        new_volume_id: str,
        new_attachment_id: str,
        request_id: str,
    ) -> None:
        """Connect the reserved new volume, have the guest's disk copied onto it and moved
        there, then end the old volume's attachment; report the outcome. A failure leaves
        the guest on the old volume and deletes the new attachment."""
        spec = spec_of(instance)
        agent = self.agent
        report = {"uuid": spec.uuid, "bdm_uuid": bdm["uuid"], "request_id": request_id,
                  "host": agent.host}  # fmt: skip
        old_id = bdm["volume_id"]
        migrating = False
        try:
            old_volume = await self.cinder.volume(old_id) or {}
            # Block storage asked for this swap (an in-use volume migrating or retyping):
            # it is told how it ended.
            migrating = old_volume.get("status") == "retyping" or old_volume.get(
                "migration_status"
            ) in ("migrating", "starting")
            new_volume = await self.cinder.volume(new_volume_id) or {}
            if await agent.driver.power_state(spec) not in PLUGGED_STATES:
                raise DriverError("the server's guest is not running: its disk cannot be copied")
            info = await self.cinder.connect(
                new_attachment_id, await self.connector(bdm["device_name"])
            )
            await self.cinder.complete(new_attachment_id)
            new_size = int(new_volume.get("size") or 0) << 30
            grown = new_size if new_size > int(old_volume.get("size") or 0) << 30 else 0
            new_device = block_device({**bdm, "volume_id": new_volume_id}, info)
            await agent.driver.swap_volume(spec, block_device(bdm), new_device, grown)
        except Exception as exc:
            error = describe(exc)
            log.warning("swapping volume %s of %s for %s failed: %s", old_id, spec.uuid,
                        new_volume_id, error)  # fmt: skip
            with contextlib.suppress(Exception):
                await self.cinder.delete_attachment(new_attachment_id)
            if migrating:
                with contextlib.suppress(Exception):
                    await self.cinder.migrate_volume_completion(old_id, new_volume_id, True)
            await agent.conductor.cast("volume_swap_failed", error=error, **report)
            return
        kept_id = new_volume_id
        try:
            if migrating:
                kept_id = await self.cinder.migrate_volume_completion(old_id, new_volume_id, False)
            if bdm.get("attachment_id"):
                await self.cinder.delete_attachment(bdm["attachment_id"])
        except Exception as exc:
            # The guest is on the new volume already: the old attachment is left to clean.
            log.warning("ending the attachment of swapped-out volume %s failed: %s", old_id,
                        describe(exc))  # fmt: skip
        await agent.conductor.cast(
            "volume_swapped", volume_id=kept_id, attachment_id=new_attachment_id,
            connection_info=info, **report,
        )  # fmt: skip

    async def extend(self, uuid: str, volume_id: str) -> None:
        """Block storage grew an attached volume: the guest's disk grows to its new size."""
        answer = await self._mappings(uuid, with_instance=True)
        if answer["instance"] is None:
            return
        spec = spec_of(answer["instance"])
        for bdm in answer["block_devices"]:
            if bdm["volume_id"] != volume_id or bdm["status"] != "attached":
                continue
            volume = await self.cinder.volume(volume_id)
            if volume is None:
                return
            try:
                await self.agent.driver.extend_volume(
                    spec, block_device(bdm), int(volume["size"]) << 30
                )
            except DriverError as exc:
                log.warning("growing volume %s in %s failed: %s", volume_id, uuid, exc)

    async def reconcile(self, present: set[str]) -> None:
        """After a restart: finish the attaches and detaches a stop interrupted, from the
        mappings the conductor keeps (the hypervisor's own state may have either end)."""
        unsettled = await self.agent.conductor.call("unsettled_block_devices", host=self.agent.host)
        for item in unsettled:
            instance, bdm = item["instance"], item["bdm"]
            if instance["spec"]["uuid"] not in present:
                continue
            if bdm["status"] == "detaching":
                await self.detach(instance, bdm, "")
            elif bdm["status"] == "swapping":
                # The guest stays on whichever volume the driver records; the mapping says
                # the old one until a swap is asked for again.
                report = {"uuid": instance["spec"]["uuid"], "bdm_uuid": bdm["uuid"],
                          "request_id": "", "host": self.agent.host}  # fmt: skip
                await self.agent.conductor.cast(
                    "volume_swap_failed", error="interrupted by a restart", **report
                )
            elif bdm.get("boot_index") is None:
                with contextlib.suppress(Exception):
                    await self.agent.driver.detach_volume(spec_of(instance), block_device(bdm))
                await self.attach(instance, bdm, "")

    # ----- boot volumes -------------------------------------------------------------------

    async def connect_boot(self, instance: dict[str, Any]) -> list[BlockDevice]:
        """Before spawn: wait for each mapped volume, attach it to this host (or move the
        attachment it kept, e.g. shelved, here), and answer the devices to boot with."""
        uuid = instance["spec"]["uuid"]
        answer = await self._mappings(uuid)
        if not answer["block_devices"]:
            return []
        connected: list[dict[str, Any]] = []
        self._boot[uuid] = connected
        devices = []
        for bdm in answer["block_devices"]:
            try:
                connector = await self.connector(bdm["device_name"])
                if bdm.get("attachment_id"):
                    attachment_id = bdm["attachment_id"]
                    info = await self.cinder.connect(attachment_id, connector)
                else:
                    await self.cinder.wait_status(
                        bdm["volume_id"], ("available", "in-use"), BOOT_VOLUME_TIMEOUT
                    )
                    attachment = await self.cinder.create_attachment(
                        bdm["volume_id"], uuid, connector
                    )
                    attachment_id = attachment["id"]
                    info = attachment.get("connection_info") or {}
            except Exception as exc:
                raise DriverError(f"volume {bdm['volume_id']}: {describe(exc)}") from exc
            connected.append({"uuid": bdm["uuid"], "attachment_id": attachment_id,
                              "connection_info": info, "status": "attached",
                              "created": not bdm.get("attachment_id")})  # fmt: skip
            devices.append(block_device(bdm, info))
        return devices

    async def complete_boot(self, uuid: str) -> None:
        """After spawn: complete the boot attachments and tell the conductor."""
        connected = self._boot.pop(uuid, [])
        if not connected:
            return
        for device in connected:
            await self.cinder.complete(device["attachment_id"])
        await self.agent.conductor.call("boot_volumes_connected", uuid=uuid, devices=connected)

    async def rollback_boot(self, uuid: str) -> None:
        """A failed build: its attachments go, the volumes stay for the next host."""
        created = [d for d in self._boot.pop(uuid, []) if d["created"]]
        for device in created:
            with contextlib.suppress(Exception):
                await self.cinder.delete_attachment(device["attachment_id"])
        if created:
            gone = [{"uuid": d["uuid"], "attachment_id": None, "connection_info": None,
                     "status": "attaching"} for d in created]  # fmt: skip
            await self.agent.conductor.call("boot_volumes_connected", uuid=uuid, devices=gone)


class VolumeCasts:
    """The bus face of the volume work (mixed into the agent's handler)."""

    agent: ComputeAgent

    async def attach_volume(
        self, instance: dict[str, Any], bdm: dict[str, Any], request_id: str
    ) -> None:
        self.agent.spawn_task(self.agent.volumes.attach(instance, bdm, request_id))

    async def detach_volume(
        self, instance: dict[str, Any], bdm: dict[str, Any], request_id: str
    ) -> None:
        self.agent.spawn_task(self.agent.volumes.detach(instance, bdm, request_id))

    async def swap_volume(
        self,
        instance: dict[str, Any],
        bdm: dict[str, Any],
        new_volume_id: str,
        new_attachment_id: str,
        request_id: str,
    ) -> None:
        self.agent.spawn_task(
            self.agent.volumes.swap(instance, bdm, new_volume_id, new_attachment_id, request_id)
        )
