"""Bridges per network, the veth pairs that put namespaces on them, and the external uplink."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from onestack.network.drivers.linuxbridge import commands
from onestack.network.drivers.linuxbridge.commands import ip

BRIDGE_PREFIX = "brq"
TAP_PREFIX = "tap"
# Host side of an external network's uplink, and its peer on the bridge.
UPLINK_PREFIX = "ext"
UPLINK_PEER_PREFIX = "exb"
VXLAN_PREFIX = "vxlan-"
VXLAN_PORT = 4789
# A frame's default destinations (head-end replication of broadcast and unknown unicast).
FLOOD_MAC = "00:00:00:00:00:00"


def bridge_name(network_id: str) -> str:
    """The bridge of a network on every host (what ``binding:vif_details`` names)."""
    return BRIDGE_PREFIX + network_id[:11]


def tap_name(port_id: str) -> str:
    """The bridge-side device of a port (a guest's tap, or a namespace veth's peer)."""
    return TAP_PREFIX + port_id[:11]


def uplink_names(network_id: str) -> tuple[str, str]:
    """(host side, bridge side) of an external network's uplink veth pair."""
    return UPLINK_PREFIX + network_id[:11], UPLINK_PEER_PREFIX + network_id[:11]


def vxlan_name(vni: int) -> str:
    """The VXLAN device of a vxlan network on every host (one per VNI)."""
    return f"{VXLAN_PREFIX}{vni}"


async def ensure_bridge(name: str, mtu: int = 1500, netns: str | None = None) -> None:
    """Create the bridge if missing (no STP, no forwarding delay) and set it up."""
    if await ip("link", "show", name, netns=netns, check=False) == "":
        await ip(
            "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0",
            netns=netns,
        )  # fmt: skip
    await ip("link", "set", name, "mtu", str(mtu), "up", netns=netns)


async def ensure_vxlan(
    vni: int, local: str, bridge: str, mtu: int, netns: str | None = None
) -> str:
    """The network's VXLAN device (VNI ``vni`` from ``local``) on ``bridge``; its name.

    No learning: where frames go is the forwarding database :func:`set_flood_peers` keeps.
    A device built with another VNI or local address is rebuilt.
    """
    name = vxlan_name(vni)
    found = [
        link
        for link in await commands.links(netns=netns)
        if link["ifname"] == name and _kind(link) == "vxlan"
    ]
    data = found[0].get("linkinfo", {}).get("info_data", {}) if found else {}
    if not found or data.get("id") != vni or data.get("local") != local:
        await commands.delete_link(name, netns=netns)
        await ip(
            "link", "add", name, "type", "vxlan", "id", str(vni), "local", local,
            "dstport", str(VXLAN_PORT), "nolearning", netns=netns,
        )  # fmt: skip
    await enslave(name, bridge, mtu, netns=netns)
    return name


async def set_flood_peers(device: str, peers: list[str], netns: str | None = None) -> None:
    """Make the VXLAN device's default destinations exactly ``peers`` (other hosts' IPs)."""
    prefix = ("bridge", "-n", netns) if netns else ("bridge",)
    text = await commands.run(*prefix, "-json", "fdb", "show", "dev", device)
    entries = json.loads(text) if text.strip() else []
    have = {e["dst"] for e in entries if e.get("mac") == FLOOD_MAC and e.get("dst")}
    for peer in sorted(have - set(peers)):
        await commands.run(*prefix, "fdb", "del", FLOOD_MAC, "dev", device, "dst", peer)
    for peer in sorted(set(peers) - have):
        await commands.run(*prefix, "fdb", "append", FLOOD_MAC, "dev", device, "dst", peer)


async def enslave(device: str, bridge: str, mtu: int = 1500, netns: str | None = None) -> None:
    """Attach ``device`` to ``bridge`` and set it up."""
    await ip("link", "set", device, "mtu", str(mtu), "master", bridge, "up", netns=netns)


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
