"""The guest's NICs: one tap per bridge port (plugged by the network data plane's
``onestack.network.vif``), QEMU user networking for ports of the ``noop`` network driver."""

from __future__ import annotations

import fcntl
import os
import struct

from onestack.compute.drivers.base import DriverError, Vif
from onestack.compute.drivers.qemu.disks import run
from onestack.compute.drivers.qemu.machine import Nic

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100

VIF_MODELS = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
    "ne2k_pci": "ne2k_pci",
    "pcnet": "pcnet",
    "vmxnet3": "vmxnet3",
}


def tap_name(vif: Vif) -> str:
    """The tap the data plane expects for the port."""
    return vif.devname or "tap" + vif.port_id[:11]


def nic_of(vif: Vif, model: str = "virtio") -> Nic:
    """The QEMU NIC of a port (``model``: the image's ``hw_vif_model``)."""
    if model not in VIF_MODELS:
        raise DriverError(
            f"hw_vif_model {model!r} is not supported (known: {', '.join(VIF_MODELS)})"
        )
    tap = tap_name(vif) if vif.vif_type == "bridge" else ""
    return Nic(id=vif.port_id[:11], mac=vif.mac_address, model=VIF_MODELS[model], tap=tap)


async def plug(vif: Vif) -> None:
    """Create the port's tap on its bridge (bridge ports only).

    The tap is made multi-queue before the data plane enslaves it: each QEMU attaches
    one queue through a file descriptor (``open_tap``), so during a live migration
    between two hosts of one machine the incoming guest shares the tap with the
    outgoing one.
    """
    if vif.vif_type != "bridge":
        return
    from onestack.network import vif as data_plane

    tap = tap_name(vif)
    if not os.path.exists(f"/sys/class/net/{tap}"):
        await run("ip", "tuntap", "add", "dev", tap, "mode", "tap", "multi_queue", "vnet_hdr")
    await data_plane.plug(vif)


def open_tap(name: str) -> int:
    """A file descriptor of one queue of the (multi-queue) tap ``name``, for QEMU's fd=."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError as exc:
        os.close(fd)
        raise DriverError(f"cannot attach to tap {name}: {exc}") from exc
    return fd


async def unplug(vif: Vif) -> None:
    """Remove the port's tap (bridge ports only; a missing tap is fine)."""
    if vif.vif_type != "bridge":
        return
    from onestack.network import vif as data_plane

    await data_plane.unplug(vif)
