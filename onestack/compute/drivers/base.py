"""The hypervisor driver contract every compute agent drives.

The compute agent owns the workflow (state transitions, reports to the
conductor, calls to the network, image and volume services); a driver only
makes the hypervisor do one thing and says what happened. ``fake`` simulates
a host; ``qemu`` runs each server as a QEMU process. A driver never touches a
database and never calls another service's API itself: what it needs from them
(image data, port bindings, volume connection info) is handed to it.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PowerState(enum.IntEnum):
    """Nova's power_state codes, as ``OS-EXT-STS:power_state`` shows them."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


@dataclass
class HostCapacity:
    """What a host offers, reported to placement as inventory and traits."""

    vcpus: int
    memory_mb: int
    disk_gb: int
    hypervisor_type: str
    hypervisor_version: int
    cpu_info: dict[str, Any] = field(default_factory=dict)
    traits: set[str] = field(default_factory=set)
    host_ip: str = "127.0.0.1"


@dataclass
class Vif:
    """One port as the network service bound it to this host."""

    port_id: str
    mac_address: str
    network_id: str
    vif_type: str  # "bridge" (linuxbridge: details["bridge_name"]) or "noop"
    details: dict[str, Any] = field(default_factory=dict)
    fixed_ips: list[dict[str, Any]] = field(default_factory=list)
    mtu: int = 1500
    # The tap device name the data plane expects: "tap" + port_id[:11].
    devname: str = ""


@dataclass
class BlockDevice:
    """A volume attached to a server, with the connection info Cinder returned."""

    volume_id: str
    mountpoint: str  # /dev/vdb
    connection_info: dict[str, Any]
    boot_index: int | None = None
    delete_on_termination: bool = False


@dataclass
class InstanceSpec:
    """Everything a driver needs to build or act on one server."""

    uuid: str
    name: str  # instance-0000002a, the hypervisor-side name
    hostname: str
    display_name: str
    project_id: str
    user_id: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int = 0
    swap_mb: int = 0
    image_id: str | None = None
    image_meta: dict[str, Any] = field(default_factory=dict)  # disk_format, properties…
    flavor_extra_specs: dict[str, str] = field(default_factory=dict)
    availability_zone: str | None = None
    key_name: str | None = None
    public_keys: dict[str, str] = field(default_factory=dict)  # name → OpenSSH public key
    user_data: str | None = None  # base64 as the API received it
    metadata: dict[str, str] = field(default_factory=dict)
    config_drive: bool = False
    launch_index: int = 0


@dataclass
class Diagnostics:
    """A guest's counters in Nova's standard form (``os-server-diagnostics`` from 2.48):
    ``cpu_details`` ``{id, time (ns), utilisation}``, ``nic_details`` ``{mac_address,
    rx_/tx_ octets, errors, drop, packets, rate}`` seen from the guest, ``disk_details``
    ``{id (device), read_bytes, read_requests, write_bytes, write_requests, errors_count}``."""

    state: str  # pending, running, paused, shutdown, crashed, suspended
    driver: str
    hypervisor: str
    hypervisor_os: str
    uptime: int  # seconds
    config_drive: bool
    memory_details: dict[str, int]  # {maximum, used} in MiB
    cpu_details: list[dict[str, Any]] = field(default_factory=list)
    nic_details: list[dict[str, Any]] = field(default_factory=list)
    disk_details: list[dict[str, Any]] = field(default_factory=list)


ImageFetcher = Callable[[str, Path], Awaitable[None]]
"""Writes image ``id``'s data to the given path (the agent streams it from the image service)."""

ImageUploader = Callable[[Path, str], Awaitable[None]]
"""Uploads a file of the given disk format as the snapshot image's data."""


class DriverError(Exception):
    """A hypervisor operation failed; the message is shown in the server's fault."""


class GuestAgentNotEnabled(DriverError):
    """The operation needs an agent inside the guest, and this guest has none."""


class ComputeDriver(abc.ABC):
    """One host's hypervisor. Every method is async and may be slow; none may block the loop."""

    name: str
    capabilities: dict[str, bool] = {
        "supports_live_migration": False,
        "supports_volume_attach": False,
        "supports_interface_attach": False,
        "supports_rescue": False,
        "supports_suspend": False,
    }
    # Whether spawn plugs the tap devices itself: the agent then waits for the network's
    # ``network-vif-plugged`` event of each "bridge" port before reporting the server up.
    plugs_vifs: bool = False
    # How the driver fetches image data outside of spawn (the destination of a move
    # needs the image its root disk is an overlay of); the agent sets it.
    fetch_image: ImageFetcher | None = None

    @abc.abstractmethod
    async def init_host(self, host: str) -> None:
        """Prepare the host (directories, probes) before the agent reports it."""

    @abc.abstractmethod
    async def host_capacity(self) -> HostCapacity:
        """What this host offers now."""

    @abc.abstractmethod
    async def list_instances(self) -> dict[str, PowerState]:
        """Servers present on the hypervisor, by uuid, with their power state."""

    @abc.abstractmethod
    async def spawn(
        self,
        instance: InstanceSpec,
        vifs: list[Vif],
        block_devices: list[BlockDevice],
        fetch_image: ImageFetcher,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Create and boot the server; returns when it is running."""

    @abc.abstractmethod
    async def destroy(
        self, instance: InstanceSpec, vifs: list[Vif], *, keep_disks: bool = False
    ) -> None:
        """Stop the server and remove it, its devices and (unless kept) its disks. Idempotent."""

    @abc.abstractmethod
    async def power_state(self, instance: InstanceSpec) -> PowerState:
        """The server's power state as the hypervisor sees it (NOSTATE when it is gone)."""

    @abc.abstractmethod
    async def reboot(self, instance: InstanceSpec, *, hard: bool) -> None:
        """Soft (guest ACPI, falling back to hard after a timeout) or hard reset."""

    @abc.abstractmethod
    async def power_off(self, instance: InstanceSpec, *, timeout: float = 60) -> None:
        """Clean shutdown within ``timeout``, then forced."""

    @abc.abstractmethod
    async def power_on(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> None:
        """Start a stopped server with its existing disks."""

    @abc.abstractmethod
    async def pause(self, instance: InstanceSpec) -> None:
        """Freeze the vCPUs; memory stays resident."""

    @abc.abstractmethod
    async def unpause(self, instance: InstanceSpec) -> None:
        """Resume paused vCPUs."""

    async def suspend(self, instance: InstanceSpec) -> None:
        """Save the server's memory to disk and stop it."""
        raise DriverError(f"{self.name} does not support suspend")

    async def resume(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> None:
        """Restore a suspended server."""
        raise DriverError(f"{self.name} does not support resume")

    @abc.abstractmethod
    async def snapshot(self, instance: InstanceSpec, upload: ImageUploader) -> None:
        """A consistent copy of the root disk, handed to ``upload``."""

    async def rescue(
        self, instance: InstanceSpec, vifs: list[Vif], fetch_image: ImageFetcher, image_id: str
    ) -> None:
        """Boot from the rescue image with the original root disk attached second."""
        raise DriverError(f"{self.name} does not support rescue")

    async def unrescue(self, instance: InstanceSpec, vifs: list[Vif]) -> None:
        """Boot the original root disk again."""
        raise DriverError(f"{self.name} does not support rescue")

    @abc.abstractmethod
    async def resize_disks(self, instance: InstanceSpec, new: InstanceSpec) -> None:
        """Grow the disks for a new flavor on this host (server powered off)."""

    async def export_disks(self, instance: InstanceSpec) -> dict[str, Any]:
        """Where a destination host can fetch this server's disks from (cold migration)."""
        raise DriverError(f"{self.name} does not support migration")

    async def import_disks(self, instance: InstanceSpec, source: dict[str, Any]) -> None:
        """Copy a migrating server's disks from the ``export_disks`` answer of its source."""
        raise DriverError(f"{self.name} does not support migration")

    async def live_migrate(self, instance: InstanceSpec, destination: dict[str, Any]) -> None:
        """Move the running server to the destination host (``prepare_live_migration`` answer)."""
        raise DriverError(f"{self.name} does not support live migration")

    async def prepare_live_migration(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> dict[str, Any]:
        """On the destination: start an incoming guest; returns what the source needs."""
        raise DriverError(f"{self.name} does not support live migration")

    async def attach_volume(self, instance: InstanceSpec, device: BlockDevice) -> None:
        """Hot-plug a volume into a running server."""
        raise DriverError(f"{self.name} does not support volume attach")

    async def detach_volume(self, instance: InstanceSpec, device: BlockDevice) -> None:
        """Unplug a volume from a running server."""
        raise DriverError(f"{self.name} does not support volume attach")

    async def extend_volume(
        self, instance: InstanceSpec, device: BlockDevice, new_size: int
    ) -> None:
        """Show the guest an attached volume that block storage grew to ``new_size`` bytes."""
        raise DriverError(f"{self.name} does not support volume extend")

    async def swap_volume(
        self, instance: InstanceSpec, old: BlockDevice, new: BlockDevice, new_size: int
    ) -> None:
        """Copy the attached volume ``old`` onto ``new`` while the guest runs and make the
        guest's disk ``new`` (``new_size``: its bytes after, when larger; 0 keeps them)."""
        raise DriverError(f"{self.name} does not support swapping volumes")

    async def attach_interface(self, instance: InstanceSpec, vif: Vif) -> None:
        """Hot-plug a network interface."""
        raise DriverError(f"{self.name} does not support interface attach")

    async def detach_interface(self, instance: InstanceSpec, vif: Vif) -> None:
        """Unplug a network interface."""
        raise DriverError(f"{self.name} does not support interface attach")

    async def diagnostics(self, instance: InstanceSpec) -> Diagnostics:
        """The guest's CPU, memory, disk and NIC counters."""
        raise NotImplementedError(f"{self.name} does not report diagnostics")

    async def set_admin_password(self, instance: InstanceSpec, password: str) -> None:
        """Set the administrator's password inside the running guest."""
        raise NotImplementedError(f"{self.name} cannot set passwords")

    @abc.abstractmethod
    async def console_output(self, instance: InstanceSpec, lines: int | None = None) -> str:
        """The serial console log (the last ``lines`` lines when given)."""

    async def vnc_address(self, instance: InstanceSpec) -> tuple[str, int]:
        """Host and port of the server's VNC server, for the console proxy."""
        raise DriverError(f"{self.name} has no graphical console")
