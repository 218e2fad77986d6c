"""Plugging guests' taps into the linuxbridge data plane (used by the qemu compute driver).

The tap is named ``tap`` + port_id[:11] and enslaved to ``binding:vif_details
["bridge_name"]``; the network agent notices it there, applies the port's security
groups and marks the port ACTIVE, and compute is told ``network-vif-plugged``.
"""

from __future__ import annotations

from onestack.compute.drivers.base import Vif
from onestack.network.drivers.linuxbridge import bridges, commands
from onestack.network.drivers.linuxbridge.commands import ip


def devname(vif: Vif) -> str:
    """The tap name of ``vif`` (the one the data plane expects unless the vif says)."""
    return vif.devname or bridges.tap_name(vif.port_id)


def bridge_of(vif: Vif) -> str:
    """The bridge the port's network has on this host."""
    return str(vif.details.get("bridge_name") or bridges.bridge_name(vif.network_id))


async def plug(vif: Vif) -> None:
    """Create the tap (if missing), ensure its bridge, enslave the tap and set it up."""
    if vif.vif_type != "bridge":
        return
    tap = devname(vif)
    if await ip("link", "show", tap, check=False) == "":
        await ip("tuntap", "add", "dev", tap, "mode", "tap")
    await bridges.ensure_bridge(bridge_of(vif), vif.mtu)
    await bridges.enslave(tap, bridge_of(vif), vif.mtu)


async def unplug(vif: Vif) -> None:
    """Remove the tap; one already gone is fine."""
    if vif.vif_type != "bridge":
        return
    await commands.delete_link(devname(vif))
