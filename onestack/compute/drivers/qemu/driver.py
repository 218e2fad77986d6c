"""The qemu driver: each server is a QEMU process driven through QMP.

State lives in ``<data dir>/compute/<host>/``: ``_base/`` holds the image cache,
``instances/<uuid>/`` one guest's disks, console log, sockets, pidfile and
definition. Nothing is kept only in memory, so an agent restarted while its
guests run finds them again (``list_instances``) and can drive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import (
    BlockDevice,
    ComputeDriver,
    Diagnostics,
    DriverError,
    GuestAgentNotEnabled,
    HostCapacity,
    ImageFetcher,
    ImageUploader,
    InstanceSpec,
    PowerState,
    Vif,
)
from onestack.compute.drivers.qemu import (
    accel,
    configdrive,
    diagnostics,
    disks,
    networking,
    transfer,
    volumes,
)
from onestack.compute.drivers.qemu.machine import Definition, Disk, Machine, Nic
from onestack.core.config import Settings

BINARY = "qemu-system-x86_64"
QEMU_STATES = {
    "running": PowerState.RUNNING,
    "paused": PowerState.PAUSED,
    "suspended": PowerState.PAUSED,
    "postmigrate": PowerState.PAUSED,
    "finish-migrate": PowerState.PAUSED,
    "inmigrate": PowerState.PAUSED,
    "prelaunch": PowerState.PAUSED,
    "restore-vm": PowerState.PAUSED,
    "save-vm": PowerState.PAUSED,
    "debug": PowerState.PAUSED,
    "io-error": PowerState.PAUSED,
    "watchdog": PowerState.PAUSED,
    "shutdown": PowerState.SHUTDOWN,
    "internal-error": PowerState.CRASHED,
    "guest-panicked": PowerState.CRASHED,
}
BASE_TRAITS = {
    "COMPUTE_VOLUME_ATTACH",
    "COMPUTE_VOLUME_EXTEND",
    "COMPUTE_NET_ATTACH_INTERFACE",
    "COMPUTE_IMAGE_TYPE_QCOW2",
    "COMPUTE_IMAGE_TYPE_RAW",
    "COMPUTE_STORAGE_BUS_VIRTIO",
    "COMPUTE_STORAGE_BUS_IDE",
    "COMPUTE_STORAGE_BUS_SCSI",
    "COMPUTE_NET_VIF_MODEL_VIRTIO",
    "COMPUTE_NET_VIF_MODEL_E1000",
    "COMPUTE_NET_VIF_MODEL_RTL8139",
    "COMPUTE_GRAPHICS_MODEL_VGA",
    "COMPUTE_FIRMWARE_BIOS",
    "COMPUTE_RESCUE_BFV",
}


class QemuDriver(ComputeDriver):
    """A host whose servers are QEMU processes (KVM when it works here, else TCG)."""

    name = "qemu"
    plugs_vifs = True
    capabilities = {
        "supports_live_migration": True,
        "supports_volume_attach": True,
        "supports_interface_attach": True,
        "supports_rescue": True,
        "supports_suspend": True,
    }

    def __init__(self, settings: Settings, *, state_dir: Path | None = None):
        self.settings = settings
        self.state_root = state_dir or (settings.data_dir / "compute")
        self.host = ""
        self.dir = self.state_root
        self.acceleration = accel.Acceleration("tcg", "not probed yet")
        self.version = 0
        self.soft_reboot_timeout = 60.0
        self.live_migration_timeout = 600.0
        self.volume_swap_timeout = 3600.0
        self.host_ip = "127.0.0.1"
        self._locks: dict[str, asyncio.Lock] = {}
        self._bases: disks.BaseImages | None = None
        self._probe: asyncio.Task[None] | None = None

    # Host -----------------------------------------------------------------------------------

    async def init_host(self, host: str) -> None:
        if shutil.which(BINARY) is None:
            raise DriverError(f"{BINARY} is not installed (qemu-system-x86)")
        self.host = host
        self.dir = (self.state_root / host).resolve()
        (self.dir / "instances").mkdir(parents=True, exist_ok=True)
        self._bases = disks.BaseImages(self.dir / "_base")
        self.version = await _qemu_version()
        # The probe may take its whole timeout (nested KVM): the agent starts meanwhile and
        # guests booted before it answers use TCG; the next heartbeat reports the result.
        self.acceleration = accel.Acceleration("tcg", "kvm probe running")
        self._probe = asyncio.create_task(self._run_probe())

    async def _run_probe(self) -> None:
        self.acceleration = await accel.probe(BINARY, self.state_root)

    async def host_capacity(self) -> HostCapacity:
        memory_kb = _meminfo().get("MemTotal", 0)
        disk = shutil.disk_usage(self.dir if self.dir.exists() else self.state_root.parent)
        traits = set(BASE_TRAITS)
        traits.add(f"CUSTOM_QEMU_ACCEL_{self.acceleration.accel.upper()}")
        if Path("/usr/share/ovmf/OVMF.fd").exists() or Path("/usr/share/OVMF/OVMF.fd").exists():
            traits.add("COMPUTE_FIRMWARE_UEFI")
        flags = _cpu_flags()
        for flag, trait in (
            ("sse2", "HW_CPU_X86_SSE2"),
            ("avx", "HW_CPU_X86_AVX"),
            ("avx2", "HW_CPU_X86_AVX2"),
            ("aes", "HW_CPU_X86_AESNI"),
            ("vmx", "HW_CPU_X86_VMX"),
            ("svm", "HW_CPU_X86_SVM"),
        ):
            if flag in flags:
                traits.add(trait)
        return HostCapacity(
            vcpus=os.cpu_count() or 1,
            memory_mb=memory_kb // 1024,
            disk_gb=disk.total >> 30,
            hypervisor_type="QEMU",
            hypervisor_version=self.version,
            cpu_info={
                "arch": "x86_64",
                "model": _cpu_model(),
                "vendor": "QEMU",
                "accel": self.acceleration.accel,
                "accel_probe": self.acceleration.detail,
            },
            traits=traits,
        )

    async def list_instances(self) -> dict[str, PowerState]:
        found: dict[str, PowerState] = {}
        root = self.dir / "instances"
        if not root.is_dir():
            return found
        for directory in root.iterdir():
            if (directory / "definition.json").exists():
                found[directory.name] = await self._power(Machine(directory, BINARY))
        return found

    # Helpers --------------------------------------------------------------------------------

    def _machine(self, instance: InstanceSpec) -> Machine:
        return Machine(self.dir / "instances" / instance.uuid, BINARY)

    def _lock(self, instance: InstanceSpec) -> asyncio.Lock:
        return self._locks.setdefault(instance.uuid, asyncio.Lock())

    def _existing(self, instance: InstanceSpec) -> Machine:
        machine = self._machine(instance)
        if not machine.definition_path.exists():
            raise DriverError(f"server {instance.uuid} is not on host {self.host}")
        return machine

    async def _power(self, machine: Machine) -> PowerState:
        if not machine.definition_path.exists():
            return PowerState.NOSTATE
        status = await machine.status()
        if status is None:
            if machine.memory_state.exists():
                return PowerState.SUSPENDED
            return PowerState.SHUTDOWN
        return QEMU_STATES.get(status, PowerState.NOSTATE)

    def _definition(
        self,
        instance: InstanceSpec,
        vifs: list[Vif],
        machine: Machine,
        config_drive: bool,
        boot_volume: BlockDevice | None = None,
    ) -> Definition:
        props = {**instance.image_meta.get("properties", {}), **instance.image_meta}
        bus = str(props.get("hw_disk_bus") or "virtio")
        if bus == "sata":
            bus = "ide"
        if bus not in ("virtio", "ide", "scsi"):
            raise DriverError(f"hw_disk_bus {bus!r} is not supported (virtio, ide, scsi, sata)")
        model = str(props.get("hw_vif_model") or "virtio")
        machine_type = str(props.get("hw_machine_type") or "pc")
        if not re.fullmatch(r"(pc|q35)[\w.-]*", machine_type):
            raise DriverError(f"hw_machine_type {machine_type!r} is not supported (pc, q35)")
        root = Disk("root", str(machine.dir / "disk"), "qcow2", bus, boot=True)
        if boot_volume is not None:
            path, fmt = _volume_path(boot_volume)
            root = Disk("root", path, fmt, bus, boot=True, serial=boot_volume.volume_id[:20])
        drives = [root]
        if instance.ephemeral_gb:
            drives.append(Disk("eph0", str(machine.dir / "disk.eph0"), "qcow2", bus))
        if instance.swap_mb:
            drives.append(Disk("swap", str(machine.dir / "disk.swap"), "raw", bus))
        if config_drive:
            drives.append(
                Disk("config", str(machine.dir / "disk.config"), "raw", "cdrom", readonly=True)
            )
        return Definition(
            uuid=instance.uuid,
            name=instance.name,
            vcpus=instance.vcpus,
            memory_mb=instance.memory_mb,
            accel=self.acceleration.accel,
            machine=machine_type,
            firmware=str(props.get("hw_firmware_type") or "bios"),
            disks=drives,
            nics=[networking.nic_of(vif, model) for vif in vifs],
        )

    async def _start(
        self,
        machine: Machine,
        definition: Definition,
        vifs: list[Vif],
        block_devices: list[BlockDevice],
        incoming: str | None = None,
    ) -> list[BlockDevice]:
        """Start the guest with its volumes (``block_devices``, else those it had) on the
        command line; the volumes a restore from ``incoming`` must plug after it runs."""
        transfer.stop_exports(machine.dir)  # a move's source serves its disks no longer
        for vif in vifs:
            await networking.plug(vif)
        definition.accel = self.acceleration.accel
        definition.save(machine.definition_path)
        (machine.dir / "vifs.json").write_text(json.dumps([asdict(v) for v in vifs]))
        saved = volumes.load(machine.dir)
        plugged: dict[str, volumes.Plugged] = {}
        later: list[BlockDevice] = []
        for device in block_devices or [p.device for p in saved.values()]:
            if device.boot_index == 0:
                continue
            known = saved.get(device.volume_id)
            if known is not None:
                plugged[device.volume_id] = volumes.Plugged(
                    device, known.node, known.qdev, known.addr
                )
            elif incoming is None:
                plugged[device.volume_id] = volumes.Plugged.fresh(device)
            else:
                # Saved device state has no such disk: it is plugged once the guest runs.
                later.append(device)
        volume_args = [arg for p in plugged.values() for arg in p.command_args()]
        await machine.start(definition, incoming, volume_args)
        for entry in plugged.values():
            if not entry.addr:
                with contextlib.suppress(DriverError):
                    entry.addr = await volumes.pci_address(machine, entry.qdev)
        volumes.save(machine.dir, plugged)
        return later

    def _saved_vifs(self, machine: Machine) -> list[Vif]:
        try:
            return [Vif(**v) for v in json.loads((machine.dir / "vifs.json").read_text())]
        except (OSError, ValueError, TypeError):
            return []

    # Lifecycle ------------------------------------------------------------------------------

    async def spawn(
        self,
        instance: InstanceSpec,
        vifs: list[Vif],
        block_devices: list[BlockDevice],
        fetch_image: ImageFetcher,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if self._bases is None:
            raise DriverError("init_host was not called")
        boot_volume = next((d for d in block_devices if d.boot_index == 0), None)
        if not instance.image_id and boot_volume is None:
            raise DriverError("a server needs an image or a boot volume")
        machine = self._machine(instance)
        async with self._lock(instance):
            machine.dir.mkdir(parents=True, exist_ok=True)
            try:
                if boot_volume is None:
                    base, fmt = await self._bases.get(str(instance.image_id), fetch_image)
                    if progress:
                        progress(40)
                    await disks.create_overlay(base, fmt, machine.dir / "disk", instance.root_gb)
                if instance.ephemeral_gb:
                    await disks.create_blank(machine.dir / "disk.eph0", instance.ephemeral_gb << 10)
                if instance.swap_mb:
                    await disks.create_blank(machine.dir / "disk.swap", instance.swap_mb, swap=True)
                # Guests without a bridge port cannot reach the metadata service: they get
                # the config drive even when it was not asked for.
                config_drive = instance.config_drive or not any(
                    v.vif_type == "bridge" for v in vifs
                )
                if config_drive:
                    await configdrive.build(instance, vifs, machine.dir / "disk.config")
                (machine.dir / "instance.json").write_text(json.dumps(asdict(instance)))
                definition = self._definition(instance, vifs, machine, config_drive, boot_volume)
                if progress:
                    progress(70)
                await self._start(machine, definition, vifs, block_devices)
            except BaseException:
                await self._remove(machine, vifs)
                raise
        if progress:
            progress(100)

    async def _remove(self, machine: Machine, vifs: list[Vif], keep_disks: bool = False) -> None:
        await machine.kill()
        transfer.stop_exports(machine.dir)
        # When the server also runs on another host of this machine (the other end of a
        # move), its taps are that host's now: only the vifs named here are unplugged.
        elsewhere = _runs_on_this_machine(machine.dir.name)
        known = {} if elsewhere else {v.port_id: v for v in self._saved_vifs(machine)}
        known.update({v.port_id: v for v in vifs})
        for vif in known.values():
            with contextlib.suppress(Exception):
                await networking.unplug(vif)
        machine.remove_sockets()
        if not machine.dir.exists():
            return
        if keep_disks:
            for path in machine.dir.iterdir():
                if not path.name.startswith("disk") and path.name not in ("instance.json",):
                    path.unlink(missing_ok=True)
            return
        shutil.rmtree(machine.dir, ignore_errors=True)

    async def destroy(
        self, instance: InstanceSpec, vifs: list[Vif], *, keep_disks: bool = False
    ) -> None:
        async with self._lock(instance):
            await self._remove(self._machine(instance), vifs, keep_disks)
        self._locks.pop(instance.uuid, None)

    async def power_state(self, instance: InstanceSpec) -> PowerState:
        return await self._power(self._machine(instance))

    async def reboot(self, instance: InstanceSpec, *, hard: bool) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            if not machine.running():
                await self._start(machine, machine.definition(), self._saved_vifs(machine), [])
                return
            if not hard:
                with contextlib.suppress(DriverError):
                    await machine.qmp("system_powerdown")
                    if await machine.wait_exit(self.soft_reboot_timeout):
                        await self._start(
                            machine, machine.definition(), self._saved_vifs(machine), []
                        )
                        return
            await machine.qmp("system_reset")
            if await machine.status() != "running":
                await machine.qmp("cont")

    async def power_off(self, instance: InstanceSpec, *, timeout: float = 60) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            if not machine.running():
                return
            if timeout > 0 and await machine.status() == "running":
                with contextlib.suppress(DriverError):
                    await machine.qmp("system_powerdown")
                    if await machine.wait_exit(timeout):
                        return
            await machine.kill()

    async def power_on(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            if machine.running():
                if await machine.status() in ("paused", "suspended"):
                    await machine.qmp("cont")
                return
            machine.memory_state.unlink(missing_ok=True)
            definition = machine.definition()
            boot_volume = next((d for d in block_devices if d.boot_index == 0), None)
            if boot_volume is not None:  # its connection may have changed (a move)
                root = next(d for d in definition.disks if d.id == "root")
                root.path, root.format = _volume_path(boot_volume)
            if vifs:
                props = {**instance.image_meta.get("properties", {}), **instance.image_meta}
                model = str(props.get("hw_vif_model") or "virtio")
                definition.nics = [networking.nic_of(vif, model) for vif in vifs]
            await self._start(machine, definition, vifs or self._saved_vifs(machine), block_devices)

    async def pause(self, instance: InstanceSpec) -> None:
        async with self._lock(instance):
            await self._running(instance).qmp("stop")

    async def unpause(self, instance: InstanceSpec) -> None:
        async with self._lock(instance):
            await self._running(instance).qmp("cont")

    def _running(self, instance: InstanceSpec) -> Machine:
        machine = self._existing(instance)
        if not machine.running():
            raise DriverError(f"server {instance.uuid} is not running")
        return machine

    async def suspend(self, instance: InstanceSpec) -> None:
        async with self._lock(instance):
            machine = self._running(instance)
            partial = machine.memory_state.with_name("memory.state.part")
            await machine.qmp("stop")
            try:
                await machine.qmp("migrate", uri=f"exec:cat > {partial}")
                await machine.wait_job("save", 600)
            except DriverError:
                partial.unlink(missing_ok=True)
                await machine.qmp("cont")
                raise
            partial.replace(machine.memory_state)
            await machine.kill()

    async def resume(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            if machine.running():
                await machine.qmp("cont")
                return
            if not machine.memory_state.exists():
                raise DriverError(f"server {instance.uuid} has no saved memory to resume")
            # The volumes plugged when it was suspended sit at their old PCI addresses, as
            # the saved device state expects.
            attached_meanwhile = await self._start(
                machine,
                machine.definition(),
                vifs or self._saved_vifs(machine),
                block_devices,
                incoming=f"exec:cat {machine.memory_state}",
            )
            await machine.wait_job("restore", 600)
            if await machine.status() != "running":
                await machine.qmp("cont")
            machine.memory_state.unlink(missing_ok=True)
            for device in attached_meanwhile:
                await self._attach(machine, device)

    async def snapshot(self, instance: InstanceSpec, upload: ImageUploader) -> None:
        machine = self._existing(instance)
        with tempfile.TemporaryDirectory(prefix="snapshot-", dir=self.dir) as tmp:
            target = Path(tmp) / "snapshot.qcow2"
            async with self._lock(instance):
                # A paused guest's disk is consistent (QEMU flushes on stop); the copy is
                # taken while paused and the guest runs on right after it.
                was_running = await machine.status() == "running"
                if was_running:
                    await machine.qmp("stop")
                try:
                    await disks.flatten(machine.dir / "disk", target)
                finally:
                    if was_running:
                        await machine.qmp("cont")
            await upload(target, "qcow2")

    # Rescue, resize, migration ---------------------------------------------------------------

    async def rescue(
        self, instance: InstanceSpec, vifs: list[Vif], fetch_image: ImageFetcher, image_id: str
    ) -> None:
        if self._bases is None:
            raise DriverError("init_host was not called")
        async with self._lock(instance):
            machine = self._existing(instance)
            base, fmt = await self._bases.get(image_id or instance.image_id or "", fetch_image)
            rescue_disk = machine.dir / "disk.rescue"
            rescue_disk.unlink(missing_ok=True)
            await disks.create_overlay(base, fmt, rescue_disk, 0)
            await machine.kill()
            definition = machine.definition()
            for disk in definition.disks:
                disk.boot = False
            definition.disks.insert(
                0, Disk("rescue", str(rescue_disk), "qcow2", definition.disks[0].bus, boot=True)
            )
            await self._start(machine, definition, vifs or self._saved_vifs(machine), [])

    async def unrescue(self, instance: InstanceSpec, vifs: list[Vif]) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            await machine.kill()
            definition = machine.definition()
            definition.disks = [d for d in definition.disks if d.id != "rescue"]
            definition.disks[0].boot = True
            (machine.dir / "disk.rescue").unlink(missing_ok=True)
            await self._start(machine, definition, vifs or self._saved_vifs(machine), [])

    async def resize_disks(self, instance: InstanceSpec, new: InstanceSpec) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            if machine.running():
                raise DriverError("disks are resized with the server powered off")
            if new.root_gb:
                await disks.grow(machine.dir / "disk", new.root_gb)
            eph = machine.dir / "disk.eph0"
            if new.ephemeral_gb and eph.exists():
                await disks.grow(eph, new.ephemeral_gb)
            definition = machine.definition()
            definition.vcpus, definition.memory_mb = new.vcpus, new.memory_mb
            definition.save(machine.definition_path)

    async def export_disks(self, instance: InstanceSpec) -> dict[str, Any]:
        machine = self._existing(instance)
        transfer.clear_markers(machine.dir)
        root = machine.dir / "disk"
        info = await disks.image_info(root) if root.exists() else {}
        files = sorted(
            p.name
            for p in machine.dir.iterdir()
            if p.name.startswith("disk") and p.name != "disk.rescue" and p.is_file()
        )
        return {
            "host": self.host,
            "marker": transfer.leave_marker(machine.dir),
            "definition": machine.definition_path.read_text(),
            "instance": (machine.dir / "instance.json").read_text(),
            "backed": bool(info.get("backing-filename")),
            "address": self.host_ip,
            "exports": await transfer.export_files(machine.dir, files, self.host_ip),
        }

    async def import_disks(self, instance: InstanceSpec, source: dict[str, Any]) -> None:
        machine = self._machine(instance)
        machine.dir.mkdir(parents=True, exist_ok=True)
        if transfer.shares(machine.dir, str(source.get("marker") or "")):
            return  # this host sees the source's directory (same host, shared storage)
        try:
            await transfer.fetch_files(str(source["address"]), source["exports"], machine.dir)
            machine.definition_path.write_text(str(source["definition"]))
            (machine.dir / "instance.json").write_text(str(source["instance"]))
            if source.get("backed"):
                base, fmt = await self._base(instance.image_id or "")
                await disks.run("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", fmt,
                                "-b", str(base), str(machine.dir / "disk"))  # fmt: skip
        except BaseException:
            await self._remove(machine, [])
            raise
        self._retarget(machine)

    async def _base(self, image_id: str) -> tuple[Path, str]:
        """This host's cached base of ``image_id``, fetched from the image service when
        missing (the destination of a move)."""
        if self._bases is None or self.fetch_image is None:
            raise DriverError("init_host was not called or the agent gave no image fetcher")
        return await self._bases.get(image_id, self.fetch_image)

    def _retarget(self, machine: Machine) -> None:
        """Point a copied definition's disk paths at this host's copy of the files."""
        if not machine.definition_path.exists():
            return
        definition = machine.definition()
        for disk in definition.disks:
            if Path(disk.path).parent.name == machine.dir.name:  # not a volume
                disk.path = str(machine.dir / Path(disk.path).name)
        definition.save(machine.definition_path)

    async def prepare_live_migration(
        self, instance: InstanceSpec, vifs: list[Vif], block_devices: list[BlockDevice]
    ) -> dict[str, Any]:
        if self._bases is None:
            raise DriverError("init_host was not called")
        machine = self._machine(instance)
        if machine.running():
            raise DriverError(f"server {instance.uuid} already runs on {self.host}")
        base, fmt = await self._base(instance.image_id or "")
        machine.dir.mkdir(parents=True, exist_ok=True)
        try:
            await disks.create_overlay(base, fmt, machine.dir / "disk", instance.root_gb)
            if instance.ephemeral_gb:
                await disks.create_blank(machine.dir / "disk.eph0", instance.ephemeral_gb << 10)
            if instance.swap_mb:
                await disks.create_blank(machine.dir / "disk.swap", instance.swap_mb, swap=True)
            config_drive = instance.config_drive or not any(v.vif_type == "bridge" for v in vifs)
            if config_drive:
                await configdrive.build(instance, vifs, machine.dir / "disk.config")
            (machine.dir / "instance.json").write_text(json.dumps(asdict(instance)))
            definition = self._definition(instance, vifs, machine, config_drive)
            await self._start(machine, definition, vifs, [], incoming="defer")
            incoming = await transfer.serve_incoming(machine, self.host_ip)
        except BaseException:
            await self._remove(machine, [])
            raise
        volumes.save(machine.dir, {d.volume_id: volumes.Plugged.fresh(d) for d in block_devices
                                   if d.boot_index != 0})  # fmt: skip
        transfer.in_background(self._await_incoming(machine))
        return {"host": self.host, **incoming, "machine_id": _machine_id()}

    async def _await_incoming(self, machine: Machine) -> None:
        """The destination's side of a live migration once prepared: everything goes
        when the guest does not arrive."""
        if not await transfer.stop_serving_when_done(machine, self.live_migration_timeout):
            async with self._locks.setdefault(machine.dir.name, asyncio.Lock()):
                if not machine.running():
                    await self._remove(machine, [])

    async def live_migrate(self, instance: InstanceSpec, destination: dict[str, Any]) -> None:
        async with self._lock(instance):
            machine = self._running(instance)
            if volumes.load(machine.dir):
                # The destination cannot rebuild their devices at the source's addresses.
                raise DriverError("live migration of a server with volumes is not supported")
            await transfer.block_migrate(machine, destination, self.live_migration_timeout)
            same_machine = destination.get("machine_id") == _machine_id()
            vifs = [] if same_machine else self._saved_vifs(machine)
            # On one machine the destination's QEMU holds a queue of the same taps.
            if same_machine:
                (machine.dir / "vifs.json").unlink(missing_ok=True)
            await self._remove(machine, vifs)
        self._locks.pop(instance.uuid, None)

    # Volumes and interfaces -------------------------------------------------------------------

    async def _attach(self, machine: Machine, device: BlockDevice) -> None:
        volumes.record(machine.dir, device.volume_id, await volumes.hot_plug(machine, device))

    async def attach_volume(self, instance: InstanceSpec, device: BlockDevice) -> None:
        async with self._lock(instance):
            await self._attach(self._running(instance), device)

    async def detach_volume(self, instance: InstanceSpec, device: BlockDevice) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            plugged = volumes.load(machine.dir).get(device.volume_id)
            if plugged is None:
                plugged = volumes.Plugged.fresh(device)
            if machine.running():
                with contextlib.suppress(DriverError):
                    await machine.qmp("device_del", id=plugged.qdev)
                await self._wait_device_gone(machine, plugged.qdev)
                await volumes.close(machine, plugged.node)
            volumes.record(machine.dir, device.volume_id, None)

    async def extend_volume(
        self, instance: InstanceSpec, device: BlockDevice, new_size: int
    ) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            if not machine.running():
                return
            if device.boot_index == 0:
                # A boot volume is the command line's drive "root", not a hot-plugged node.
                await machine.qmp("block_resize", device="root", size=new_size)
            else:
                plugged = volumes.load(machine.dir).get(device.volume_id)
                node = plugged.node if plugged else volumes.node_name(device.volume_id)
                await machine.qmp("block_resize", **{"node-name": node}, size=new_size)

    async def swap_volume(
        self, instance: InstanceSpec, old: BlockDevice, new: BlockDevice, new_size: int
    ) -> None:
        async with self._lock(instance):
            machine = self._running(instance)
            current = volumes.load(machine.dir).get(old.volume_id)
            if current is None:
                raise DriverError(f"volume {old.volume_id} is not plugged into {instance.uuid}")
            swapped = await volumes.mirror(
                machine, current, new, new_size, self.volume_swap_timeout
            )
            plugged = volumes.load(machine.dir)
            plugged.pop(old.volume_id, None)
            plugged[new.volume_id] = swapped
            volumes.save(machine.dir, plugged)

    async def _wait_device_gone(
        self, machine: Machine, device_id: str, timeout: float = 30
    ) -> None:
        for _ in range(int(timeout / 0.25)):
            answer = await machine.qmp("qom-list", path="/machine/peripheral")
            if not any(entry.get("name") == device_id for entry in answer):
                return
            await asyncio.sleep(0.25)
        raise DriverError(f"the guest did not release device {device_id} within {timeout:g} s")

    async def attach_interface(self, instance: InstanceSpec, vif: Vif) -> None:
        """Hot-plug into a running guest; a stopped one gets the NIC at its next start."""
        async with self._lock(instance):
            machine = self._existing(instance)
            nic = networking.nic_of(vif)
            if machine.running():
                await self._hot_plug_nic(machine, vif, nic)
            definition = machine.definition()
            definition.nics.append(nic)
            definition.save(machine.definition_path)
            vifs = [v for v in self._saved_vifs(machine) if v.port_id != vif.port_id] + [vif]
            (machine.dir / "vifs.json").write_text(json.dumps([asdict(v) for v in vifs]))

    async def _hot_plug_nic(self, machine: Machine, vif: Vif, nic: Nic) -> None:
        await networking.plug(vif)
        if nic.tap:
            fd = networking.open_tap(nic.tap)
            try:
                await machine.qmp_with_fd(
                    fd,
                    f"tapfd-{nic.id}",
                    "netdev_add",
                    type="tap",
                    id=f"net-{nic.id}",
                    fd=f"tapfd-{nic.id}",
                )
            finally:
                os.close(fd)
        else:
            await machine.qmp("netdev_add", type="user", id=f"net-{nic.id}")
        try:
            await machine.qmp(
                "device_add",
                driver=nic.model,
                netdev=f"net-{nic.id}",
                mac=nic.mac,
                id=f"nic-{nic.id}",
            )
        except DriverError:
            with contextlib.suppress(DriverError):
                await machine.qmp("netdev_del", id=f"net-{nic.id}")
            raise

    async def detach_interface(self, instance: InstanceSpec, vif: Vif) -> None:
        async with self._lock(instance):
            machine = self._existing(instance)
            nic_id = vif.port_id[:11]
            if machine.running():
                with contextlib.suppress(DriverError):
                    await machine.qmp("device_del", id=f"nic-{nic_id}")
                await self._wait_device_gone(machine, f"nic-{nic_id}")
                with contextlib.suppress(DriverError):
                    await machine.qmp("netdev_del", id=f"net-{nic_id}")
            await networking.unplug(vif)
            definition = machine.definition()
            definition.nics = [n for n in definition.nics if n.id != nic_id]
            definition.save(machine.definition_path)
            vifs = [v for v in self._saved_vifs(machine) if v.port_id != vif.port_id]
            (machine.dir / "vifs.json").write_text(json.dumps([asdict(v) for v in vifs]))

    async def diagnostics(self, instance: InstanceSpec) -> Diagnostics:
        machine = self._running(instance)
        return await diagnostics.collect(machine, machine.definition(), instance.config_drive)

    async def set_admin_password(self, instance: InstanceSpec, password: str) -> None:
        """Guests get no QEMU guest agent channel, so there is nobody inside to ask."""
        self._running(instance)
        raise GuestAgentNotEnabled("QEMU guest agent is not enabled")

    # Consoles -------------------------------------------------------------------------------

    async def console_output(self, instance: InstanceSpec, lines: int | None = None) -> str:
        machine = self._existing(instance)
        try:
            data = machine.console_log.read_bytes()
        except FileNotFoundError:
            return ""
        text = data.decode(errors="replace").replace("\r\n", "\n")
        if lines is not None:
            text = "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
        return text

    async def vnc_address(self, instance: InstanceSpec) -> tuple[str, int]:
        return "127.0.0.1", await self._running(instance).vnc_port()


def _volume_path(device: BlockDevice) -> tuple[str, str]:
    """Where QEMU opens a volume given as a boot disk: (path or NBD URL, format)."""
    info = device.connection_info
    data = info.get("data") or {}
    if info.get("driver_volume_type") == "file":
        return str(data["path"]), str(data.get("format") or "raw")
    if info.get("driver_volume_type") == "nbd":
        return f"nbd://{data['host']}:{data['port']}/{data.get('name') or ''}", "raw"
    raise DriverError(
        f"volume connection type {info.get('driver_volume_type')!r} is not supported (file, nbd)"
    )


def _runs_on_this_machine(uuid: str) -> bool:
    """Whether a QEMU process of server ``uuid`` runs here (another host's, once this
    host's own is stopped)."""
    needle = f"-uuid\0{uuid}\0".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if needle in cmdline.read_bytes():
                return True
    return False


def _machine_id() -> str:
    """This machine's identity (hosts on one machine share taps and files)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            return Path(path).read_text().strip()
    return socket.gethostname()


async def _qemu_version() -> int:
    """Nova's integer version (7.2.0 → 7002000)."""
    output = await asyncio.to_thread(
        subprocess.run, [BINARY, "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"version (\d+)\.(\d+)\.(\d+)", output.stdout)
    if not match:
        return 0
    major, minor, micro = (int(x) for x in match.groups())
    return major * 1_000_000 + minor * 1_000 + micro


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) if rest.split() else 0
    return values


def _cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return "unknown"
