"""Bridges per network, the veth pairs that put namespaces on them, and the external uplink."""

from __future__ import annotations

import ipaddress
from typing import Any

from onestack.network.drivers.linuxbridge import commands
from onestack.network.drivers.linuxbridge.commands import ip

BRIDGE_PREFIX = "brq"
TAP_PREFIX = "tap"
# Host side of an external network's uplink, and its peer on the bridge.
UPLINK_PREFIX = "ext"
UPLINK_PEER_PREFIX = "exb"


def bridge_name(network_id: str) -> str:
    """The bridge of a network on every host (what ``binding:vif_details`` names)."""
    return BRIDGE_PREFIX + network_id[:11]


def tap_name(port_id: str) -> str:
    """The bridge-side device of a port (a guest's tap, or a namespace veth's peer)."""
    return TAP_PREFIX + port_id[:11]


def uplink_names(network_id: str) -> tuple[str, str]:
    """(host side, bridge side) of an external network's uplink veth pair."""
    return UPLINK_PREFIX + network_id[:11], UPLINK_PEER_PREFIX + network_id[:11]


async def ensure_bridge(name: str, mtu: int = 1500) -> None:
    """Create the bridge if missing (no STP, no forwarding delay) and set it up."""
    if await ip("link", "show", name, check=False) == "":
        await ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    await ip("link", "set", name, "mtu", str(mtu), "up")


async def enslave(device: str, bridge: str, mtu: int = 1500) -> None:
    """Attach ``device`` to ``bridge`` and set it up."""
    await ip("link", "set", device, "mtu", str(mtu), "master", bridge, "up")


async def ensure_veth(
    bridge_side: str, inner: str, netns: str, bridge: str, mac: str | None, mtu: int
) -> None:
    """A veth pair: ``bridge_side`` on ``bridge``, ``inner`` (with ``mac``) inside ``netns``."""
    inside = {link["ifname"] for link in await commands.links(netns=netns)}
    if inner not in inside:
        await commands.delete_link(bridge_side)
        await ip("link", "add", bridge_side, "type", "veth", "peer", "name", inner)
        await ip("link", "set", inner, "netns", netns)
    if mac:
        await ip("link", "set", inner, "address", mac, netns=netns)
    await ip("link", "set", inner, "mtu", str(mtu), "up", netns=netns)
    await enslave(bridge_side, bridge, mtu)


async def set_addresses(device: str, cidrs: list[str], netns: str | None = None) -> None:
    """Make ``device``'s addresses exactly ``cidrs`` (global scope)."""
    shown = await commands.ip_json("addr", "show", "dev", device, netns=netns)
    have = {
        f"{a['local']}/{a['prefixlen']}"
        for link in shown
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    }
    want = {str(ipaddress.ip_interface(c)) for c in cidrs}
    for cidr in have - want:
        await ip("addr", "del", cidr, "dev", device, netns=netns, check=False)
    for cidr in want - have:
        await ip("addr", "add", cidr, "dev", device, netns=netns)


async def ensure_uplink(network_id: str, bridge: str, cidrs: list[str], mtu: int) -> None:
    """The host's leg on an external network: a veth whose host side holds the gateways."""
    host_side, peer = uplink_names(network_id)
    if await ip("link", "show", host_side, check=False) == "":
        await commands.delete_link(peer)
        await ip("link", "add", host_side, "type", "veth", "peer", "name", peer)
    await enslave(peer, bridge, mtu)
    await ip("link", "set", host_side, "mtu", str(mtu), "up")
    await set_addresses(host_side, cidrs)


def bridge_members(links: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Our bridges with the names of the devices enslaved to each."""
    members: dict[str, list[str]] = {}
    for link in links:
        if link["ifname"].startswith(BRIDGE_PREFIX) and _kind(link) == "bridge":
            members.setdefault(link["ifname"], [])
    for link in links:
        master = link.get("master")
        if master in members:
            members[master].append(link["ifname"])
    return members


def _kind(link: dict[str, Any]) -> str:
    kind: str = link.get("linkinfo", {}).get("info_kind", "")
    return kind
