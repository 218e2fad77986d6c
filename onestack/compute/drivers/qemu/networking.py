"""The guest's NICs: one tap per bridge port (plugged by the network data plane's
``onestack.network.vif``), QEMU user networking for ports of the ``noop`` network driver."""

from __future__ import annotations

from onestack.compute.drivers.base import DriverError, Vif
from onestack.compute.drivers.qemu.machine import Nic

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
    """Create the port's tap on its bridge (bridge ports only)."""
    if vif.vif_type != "bridge":
        return
    from onestack.network import vif as data_plane

    await data_plane.plug(vif)


async def unplug(vif: Vif) -> None:
    """Remove the port's tap (bridge ports only; a missing tap is fine)."""
    if vif.vif_type != "bridge":
        return
    from onestack.network import vif as data_plane

    await data_plane.unplug(vif)
