"""Volumes plugged into a guest: QEMU block nodes from Cinder's connection info, the record
of what is plugged where (``volumes.json``), and copying a plugged volume onto another.

A hot-plugged volume is a ``blockdev-add`` node under a ``virtio-blk-pci`` device. A volume
whose type has front-end QoS specs gets a ``throttle`` filter node between the device and its
format node (``<node>-fmt``), with the limits in a ``throttle-group`` object (``<node>-qos``).
Its record keeps the node name, the device id and the PCI address the guest saw it at, so a
restart (start, soft reboot, rescue) puts it back on the command line, and a resume from
saved memory finds it at the very address the saved device state names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import BlockDevice, DriverError
from onestack.compute.drivers.qemu.machine import Machine

log = logging.getLogger(__name__)

RECORD = "volumes.json"
_DEVICE_FIELDS = {f.name for f in fields(BlockDevice)}

# Cinder's front-end QoS keys (those Nova hands to the hypervisor) and the QEMU throttle
# limits they set: <scope>_<unit>_sec[_max[_length]] -> <unit>-<scope>[-max[-length]].
THROTTLE_LIMITS = {"size_iops_sec": "iops-size"} | {
    f"{scope}_{unit}_sec{suffix}": f"{qemu_unit}-{scope}{suffix.replace('_', '-')}"
    for unit, qemu_unit in (("bytes", "bps"), ("iops", "iops"))
    for scope in ("total", "read", "write")
    for suffix in ("", "_max", "_max_length")
}


def node_name(volume_id: str) -> str:
    """The block node (and device id) of a volume plugged into a guest."""
    return "vol-" + volume_id[:18]


def blockdev(info: dict[str, Any], node: str) -> dict[str, Any]:
    """``blockdev-add`` arguments opening the volume ``info`` describes as ``node``."""
    kind = info.get("driver_volume_type")
    data = info.get("data") or {}
    if kind == "file":
        file_node: dict[str, Any] = {"driver": "file", "filename": str(data["path"])}
        fmt = str(data.get("format") or "raw")
    elif kind == "nbd":
        file_node = {
            "driver": "nbd",
            "server": {"type": "inet", "host": str(data["host"]), "port": str(data["port"])},
            "export": str(data.get("name") or ""),
        }
        fmt = "raw"
    else:
        raise DriverError(f"volume connection type {kind!r} is not supported (file, nbd)")
    return {
        "driver": fmt,
        "node-name": node,
        "file": file_node,
        "read-only": data.get("access_mode") == "ro",
    }


def throttle_limits(qos_specs: dict[str, Any], volume_id: str = "") -> dict[str, int]:
    """QEMU ``throttle-group`` limits from a volume's front-end QoS specs. Keys QEMU has no
    limit for, and values that are not whole numbers >= 0, are left out (and logged); a
    zero is no limit, as in Cinder."""
    limits = {}
    for key, value in qos_specs.items():
        limit = THROTTLE_LIMITS.get(key)
        try:
            number = int(str(value))
        except ValueError:
            number = -1
        if limit is None or number < 0:
            log.info(
                "volume %s: QoS spec %s=%r ignored (not a QEMU I/O limit)", volume_id, key, value
            )
        elif number:
            limits[limit] = number
    return limits


def open_steps(
    info: dict[str, Any], node: str, volume_id: str = ""
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``object-add`` and ``blockdev-add`` arguments (in order) that open the volume
    ``info`` describes as ``node``: its format node alone, or, with QoS limits, a throttle
    group and a throttle filter over the format node."""
    data = info.get("data") or {}
    limits = throttle_limits(data.get("qos_specs") or {}, volume_id)
    if not limits:
        return [], [blockdev(info, node)]
    group = {"qom-type": "throttle-group", "id": f"{node}-qos", "limits": limits}
    fmt = blockdev(info, f"{node}-fmt")
    throttle = {
        "driver": "throttle",
        "node-name": node,
        "throttle-group": group["id"],
        "file": fmt["node-name"],
        "read-only": fmt["read-only"],
    }
    return [group], [fmt, throttle]


@dataclass
class Plugged:
    """A volume in a guest: its block node, its device and the device's PCI address."""

    device: BlockDevice
    node: str
    qdev: str
    addr: str = ""  # slot.function in hex; empty until QEMU placed the device

    @classmethod
    def fresh(cls, device: BlockDevice) -> Plugged:
        name = node_name(device.volume_id)
        return cls(device, name, name)

    def command_args(self) -> list[str]:
        """The ``-blockdev``/``-device`` pair that plugs it at start."""
        serial = self.device.volume_id[:20]
        device = f"virtio-blk-pci,drive={self.node},id={self.qdev},serial={serial}"
        if self.addr:
            device += f",addr={self.addr}"
        objects, nodes = open_steps(self.device.connection_info, self.node, self.device.volume_id)
        return [
            *(arg for o in objects for arg in ("-object", json.dumps(o))),
            *(arg for n in nodes for arg in ("-blockdev", json.dumps(n))),
            "-device",
            device,
        ]


def load(directory: Path) -> dict[str, Plugged]:
    """The volumes recorded as plugged into the guest of ``directory``, by volume id."""
    try:
        saved = json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for volume_id, entry in saved.items():
        try:
            device = BlockDevice(**{k: v for k, v in entry.items() if k in _DEVICE_FIELDS})
        except TypeError:
            continue
        name = node_name(volume_id)
        found[volume_id] = Plugged(
            device, entry.get("node") or name, entry.get("qdev") or name, entry.get("addr") or ""
        )
    return found


def save(directory: Path, plugged: dict[str, Plugged]) -> None:
    """Record ``plugged`` as the guest's volumes."""
    entries = {
        volume_id: {**asdict(p.device), "node": p.node, "qdev": p.qdev, "addr": p.addr}
        for volume_id, p in plugged.items()
    }
    partial = directory / (RECORD + ".part")
    partial.write_text(json.dumps(entries))
    partial.replace(directory / RECORD)


def record(directory: Path, volume_id: str, plugged: Plugged | None) -> None:
    """Record one volume as plugged (or, with None, as gone)."""
    current = load(directory)
    if plugged is None:
        current.pop(volume_id, None)
    else:
        current[volume_id] = plugged
    save(directory, current)


async def pci_address(machine: Machine, qdev: str) -> str:
    """Where QEMU put device ``qdev`` on the PCI bus, as ``-device ...,addr=`` takes it."""
    devfn = int(await machine.qmp("qom-get", path=f"/machine/peripheral/{qdev}", property="addr"))
    return f"{devfn >> 3:02x}.{devfn & 7}"


async def hot_plug(machine: Machine, device: BlockDevice) -> Plugged:
    """Open the volume and plug it into the running guest as a virtio disk."""
    plugged = Plugged.fresh(device)
    objects, nodes = open_steps(device.connection_info, plugged.node, device.volume_id)
    try:
        for arguments in objects:
            await machine.qmp("object-add", **arguments)
        for arguments in nodes:
            await machine.qmp("blockdev-add", **arguments)
        await machine.qmp(
            "device_add",
            driver="virtio-blk-pci",
            drive=plugged.node,
            id=plugged.qdev,
            serial=device.volume_id[:20],
        )
        plugged.addr = await pci_address(machine, plugged.qdev)
    except DriverError:
        await _quietly(machine, "device_del", id=plugged.qdev)
        await close(machine, plugged.node)
        raise
    return plugged


async def close(machine: Machine, node: str) -> None:
    """Close a volume's block nodes once no device uses them: ``node``, the format node
    under it if any, and its throttle group."""
    await _quietly(machine, "blockdev-del", **{"node-name": node})
    await _quietly(machine, "blockdev-del", **{"node-name": f"{node}-fmt"})
    await _quietly(machine, "object-del", id=f"{node}-qos")


async def mirror(
    machine: Machine, current: Plugged, new: BlockDevice, new_size: int, timeout: float
) -> Plugged:
    """Copy the plugged volume onto ``new`` while the guest runs, then make the guest's disk
    ``new`` (blockdev-mirror, job-complete pivots). ``new_size``: bytes the disk has after
    (a larger new volume); 0 keeps the size. The old volume is closed only after the pivot:
    any failure leaves the guest on it."""
    target = node_name(new.volume_id)
    if target == current.node:
        target += "-swap"
    # A mirror needs a target of the source's exact size: a raw slice of the new volume
    # (dropped once the guest is on it) hides any extra space until the copy is done.
    source_size = await _node_size(machine, current.node)
    await machine.qmp("blockdev-add", **blockdev(new.connection_info, f"{target}-fmt"))
    try:
        await machine.qmp(
            "blockdev-add",
            driver="raw",
            **{"node-name": target, "file": f"{target}-fmt", "size": source_size},
        )
    except DriverError:
        await _quietly(machine, "blockdev-del", **{"node-name": f"{target}-fmt"})
        raise
    job = f"swap-{current.node}"
    try:
        await machine.qmp(
            "blockdev-mirror",
            **{"job-id": job, "device": current.node, "target": target, "sync": "full",
               "auto-dismiss": False},
        )  # fmt: skip
        await _wait_job(machine, job, "ready", timeout)
        await machine.qmp("job-complete", id=job)
        await _wait_job(machine, job, "concluded", timeout)
        await machine.qmp("job-dismiss", id=job)
        if await _device_node(machine, current.qdev) != target:
            raise DriverError(f"the guest's disk {current.qdev} did not move to {target}")
    except DriverError:
        await _quietly(machine, "job-cancel", id=job, force=True)
        await _quietly(machine, "job-dismiss", id=job)
        await close(machine, target)
        raise
    await close(machine, current.node)
    await machine.qmp(
        "blockdev-reopen", options=[{"driver": "raw", "node-name": target, "file": f"{target}-fmt"}]
    )
    if new_size > source_size:
        await machine.qmp("block_resize", **{"node-name": target}, size=new_size)
    return Plugged(new, target, current.qdev, current.addr)


async def _node_size(machine: Machine, node: str) -> int:
    for entry in await machine.qmp("query-named-block-nodes", flat=True):
        if entry.get("node-name") == node:
            return int(entry["image"]["virtual-size"])
    raise DriverError(f"block node {node} is not open in the guest")


async def _device_node(machine: Machine, qdev: str) -> str | None:
    for entry in await machine.qmp("query-block"):
        if entry.get("qdev", "").startswith(f"/machine/peripheral/{qdev}/"):
            return (entry.get("inserted") or {}).get("node-name")
    return None


async def _wait_job(machine: Machine, job: str, status: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [j for j in await machine.qmp("query-jobs") if j.get("id") == job]
        if not found:
            raise DriverError(f"block job {job} vanished")
        if found[0].get("error"):
            raise DriverError(f"block job {job} failed: {found[0]['error']}")
        if found[0].get("status") == status:
            return
        if found[0].get("status") == "concluded":
            raise DriverError(f"block job {job} ended before it was {status}")
        await asyncio.sleep(0.2)
    raise DriverError(f"block job {job} was not {status} within {timeout:g} s")


async def _quietly(machine: Machine, command: str, **arguments: Any) -> None:
    """A clean-up step whose failure changes nothing (the thing may be gone already)."""
    try:
        await machine.qmp(command, **arguments)
    except DriverError:
        return
