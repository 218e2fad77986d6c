"""A simulated hypervisor: capacity from settings, a boot delay, power states, all in memory.

For tests and scale simulation (thousands of hosts in one process). Each agent has its own
instance, so each fake host has its own servers. Image data is never fetched and snapshots
upload a small placeholder disk.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import (
    BlockDevice,
    ComputeDriver,
    Diagnostics,
    DriverError,
    HostCapacity,
    ImageFetcher,
    ImageUploader,
    InstanceSpec,
    PowerState,
    Vif,
)
from onestack.core.config import Settings

NIC_COUNTERS = (
    "rx_octets", "rx_errors", "rx_drop", "rx_packets", "rx_rate",
    "tx_octets", "tx_errors", "tx_drop", "tx_packets", "tx_rate",
)  # fmt: skip
DISK_COUNTERS = ("read_bytes", "read_requests", "write_bytes", "write_requests", "errors_count")
FAKE_STATES = {
    PowerState.RUNNING: "running",
    PowerState.PAUSED: "paused",
    PowerState.SHUTDOWN: "shutdown",
    PowerState.SUSPENDED: "suspended",
    PowerState.CRASHED: "crashed",
}
FAKE_TRAITS = {"COMPUTE_NET_ATTACH_INTERFACE", "COMPUTE_VOLUME_ATTACH", "HW_CPU_X86_SSE2"}


@dataclass
class FakeGuest:
    """One simulated server."""

    spec: InstanceSpec
    state: PowerState = PowerState.RUNNING
    rescued: bool = False
    console: list[str] = field(default_factory=list)
    volumes: dict[str, BlockDevice] = field(default_factory=dict)
    volume_sizes: dict[str, int] = field(default_factory=dict)  # bytes, once extended
    vifs: dict[str, Vif] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    admin_password: str | None = None


class FakeDriver(ComputeDriver):
    """A host whose guests exist only in this object."""

    name = "fake"
    capabilities = {
        "supports_live_migration": True,
        "supports_volume_attach": True,
        "supports_interface_attach": True,
        "supports_rescue": True,
        "supports_suspend": True,
    }

    def __init__(self, settings: Settings):
        config = settings.compute
        self.capacity = HostCapacity(
            vcpus=config.fake_vcpus,
            memory_mb=config.fake_memory_mb,
            disk_gb=config.fake_disk_gb,
            hypervisor_type="fake",
            hypervisor_version=1000,
            cpu_info={"arch": "x86_64", "model": "fake", "vendor": "onestack"},
            traits=set(FAKE_TRAITS),
        )
        self.boot_delay = config.fake_boot_delay
        self.host = ""
        self.guests: dict[str, FakeGuest] = {}

    def _guest(self, instance: InstanceSpec) -> FakeGuest:
        guest = self.guests.get(instance.uuid)
        if guest is None:
            raise DriverError(f"server {instance.uuid} is not on fake host {self.host}")
        return guest

    async def init_host(self, host: str) -> None:
        self.host = host

    async def host_capacity(self) -> HostCapacity:
        return self.capacity

    async def list_instances(self) -> dict[str, PowerState]:
        return {uuid: guest.state for uuid, guest in self.guests.items()}

    async def spawn(
        self,
        instance: InstanceSpec,
        vifs: list[Vif],
        block_devices: list[BlockDevice],
        fetch_image: ImageFetcher,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if self.boot_delay:
            await asyncio.sleep(self.boot_delay)
        if instance.flavor_extra_specs.get("fake:fail_spawn") == "true":
            raise DriverError(f"fake host {self.host} was told to fail this build")
        self.guests[instance.uuid] = FakeGuest(
            spec=instance,
            console=[f"fake console of {instance.display_name} on {self.host}", "login: "],
            volumes={device.volume_id: device for device in block_devices},
            vifs={vif.port_id: vif for vif in vifs},
        )
        if progress is not None:
            progress(100)

    async def destroy(
        self, instance: InstanceSpec, vifs: list[Vif], *, keep_disks: bool = False
    ) -> None:
        self.guests.pop(instance.uuid, None)

    async def power_state(self, instance: InstanceSpec) -> PowerState:
        guest = self.guests.get(instance.uuid)
        return guest.state if guest is not None else PowerState.NOSTATE

    async def reboot(self, instance: InstanceSpec, *, hard: bool) -> None:
        guest = self._guest(instance)
        guest.state = PowerState.RUNNING
        guest.console.append(f"{'hard' if hard else 'soft'} reboot")

    async def power_off(self, instance: InstanceSpec, *, timeout: float = 60) -> None:
        self._guest(instance).state = PowerState.SHUTDOWN

    async def power_on(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> None:
        self._guest(instance).state = PowerState.RUNNING

    async def pause(self, instance: InstanceSpec) -> None:
        self._guest(instance).state = PowerState.PAUSED

    async def unpause(self, instance: InstanceSpec) -> None:
        self._guest(instance).state = PowerState.RUNNING

    async def suspend(self, instance: InstanceSpec) -> None:
        self._guest(instance).state = PowerState.SUSPENDED

    async def resume(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> None:
        self._guest(instance).state = PowerState.RUNNING

    async def snapshot(self, instance: InstanceSpec, upload: ImageUploader) -> None:
        self._guest(instance)
        with tempfile.TemporaryDirectory() as tmp:
            disk = Path(tmp) / "disk"
            disk.write_bytes(f"fake root disk of {instance.uuid}\n".encode() * 64)
            await upload(disk, "raw")

    async def rescue(
        self, instance: InstanceSpec, vifs: list[Vif], fetch_image: ImageFetcher, image_id: str
    ) -> None:
        guest = self._guest(instance)
        guest.rescued = True
        guest.state = PowerState.RUNNING

    async def unrescue(self, instance: InstanceSpec, vifs: list[Vif]) -> None:
        guest = self._guest(instance)
        guest.rescued = False
        guest.state = PowerState.RUNNING

    async def resize_disks(self, instance: InstanceSpec, new: InstanceSpec) -> None:
        self._guest(instance).spec = new

    async def export_disks(self, instance: InstanceSpec) -> dict[str, Any]:
        self._guest(instance)
        return {"host": self.host, "uuid": instance.uuid}

    async def import_disks(self, instance: InstanceSpec, source: dict[str, Any]) -> None:
        self.guests[instance.uuid] = FakeGuest(spec=instance, state=PowerState.SHUTDOWN)

    async def prepare_live_migration(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> dict[str, Any]:
        self.guests[instance.uuid] = FakeGuest(
            spec=instance, state=PowerState.RUNNING, vifs={v.port_id: v for v in vifs}
        )
        return {"host": self.host}

    async def live_migrate(self, instance: InstanceSpec, destination: dict[str, Any]) -> None:
        self._guest(instance)
        self.guests.pop(instance.uuid, None)

    async def attach_volume(self, instance: InstanceSpec, device: BlockDevice) -> None:
        self._guest(instance).volumes[device.volume_id] = device

    async def detach_volume(self, instance: InstanceSpec, device: BlockDevice) -> None:
        self._guest(instance).volumes.pop(device.volume_id, None)

    async def extend_volume(
        self, instance: InstanceSpec, device: BlockDevice, new_size: int
    ) -> None:
        guest = self._guest(instance)
        if device.volume_id not in guest.volumes:
            raise DriverError(f"volume {device.volume_id} is not attached to {instance.uuid}")
        guest.volume_sizes[device.volume_id] = new_size

    async def swap_volume(
        self, instance: InstanceSpec, old: BlockDevice, new: BlockDevice, new_size: int
    ) -> None:
        guest = self._guest(instance)
        if old.volume_id not in guest.volumes:
            raise DriverError(f"volume {old.volume_id} is not attached to {instance.uuid}")
        del guest.volumes[old.volume_id]
        guest.volumes[new.volume_id] = new
        if new_size:
            guest.volume_sizes[new.volume_id] = new_size

    async def attach_interface(self, instance: InstanceSpec, vif: Vif) -> None:
        guest = self._guest(instance)
        if instance.flavor_extra_specs.get("fake:fail_interface_attach") == "true":
            raise DriverError(f"fake host {self.host} was told to fail interface attaches")
        guest.vifs[vif.port_id] = vif

    async def detach_interface(self, instance: InstanceSpec, vif: Vif) -> None:
        self._guest(instance).vifs.pop(vif.port_id, None)

    async def diagnostics(self, instance: InstanceSpec) -> Diagnostics:
        """Counters of the simulated guest: CPU time is its uptime on every vCPU; disks
        and NICs are the ones it has, idle."""
        guest = self._guest(instance)
        uptime = time.monotonic() - guest.started
        disks = ["vda", *(d.mountpoint.rsplit("/", 1)[-1] for d in guest.volumes.values())]
        return Diagnostics(
            state=FAKE_STATES.get(guest.state, "pending"),
            driver="fake",
            hypervisor="fake",
            hypervisor_os="linux",
            uptime=int(uptime),
            config_drive=instance.config_drive,
            memory_details={"maximum": instance.memory_mb, "used": instance.memory_mb},
            cpu_details=[
                {"id": cpu, "time": int(uptime * 1e9), "utilisation": 100}
                for cpu in range(instance.vcpus)
            ],
            nic_details=[
                {"mac_address": vif.mac_address, **dict.fromkeys(NIC_COUNTERS, 0)}
                for vif in guest.vifs.values()
            ],
            disk_details=[{"id": disk, **dict.fromkeys(DISK_COUNTERS, 0)} for disk in disks],
        )

    async def set_admin_password(self, instance: InstanceSpec, password: str) -> None:
        guest = self._guest(instance)
        if guest.state != PowerState.RUNNING:
            raise DriverError(f"server {instance.uuid} is not running")
        guest.admin_password = password

    async def vnc_address(self, instance: InstanceSpec) -> tuple[str, int]:
        self._guest(instance)
        return self.capacity.host_ip, 5900 + list(self.guests).index(instance.uuid)

    async def console_output(self, instance: InstanceSpec, lines: int | None = None) -> str:
        console = self._guest(instance).console
        shown = console[-lines:] if lines else console
        return "\n".join(shown) + "\n"
