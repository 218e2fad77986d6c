"""Routers: a ``qrouter-<id>`` namespace with one leg per subnet and one on the external network.

Forwarding (IPv4 and IPv6) is on inside it; nftables (table ``ip onestack_nat``, replaced
as a whole) does SNAT of the internal IPv4 subnets to the gateway address and the
floating IPs' DNAT and SNAT; IPv6 is routed without NAT, as in Neutron. The default
routes (one per IP version) go to the external subnets' gateways; static routes are
``ip route`` entries with protocol ``static``. radvd advertises the IPv6 subnets on
the internal legs (see ``radvd.py``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from onestack.network.drivers.linuxbridge import bridges, commands, radvd
from onestack.network.drivers.linuxbridge.commands import ip

NAMESPACE_PREFIX = "qrouter-"
NAT_TABLE = "onestack_nat"
GATEWAY_OWNER = "network:router_gateway"
INTERFACE_OWNER = "network:router_interface"


def namespace(router_id: str) -> str:
    return NAMESPACE_PREFIX + router_id


def _interface(fixed_ip: dict[str, str]) -> str:
    return f"{fixed_ip['ip_address']}/{ipaddress.ip_network(fixed_ip['cidr']).prefixlen}"


def nat_ruleset(
    gateway_device: str | None,
    gateway_address: str | None,
    internal_cidrs: list[str],
    floating_ips: list[dict[str, str]],
    enable_snat: bool,
) -> str:
    """The router's NAT table: floating IPs both ways, and SNAT of its subnets."""
    lines = [
        f"table ip {NAT_TABLE}",
        f"delete table ip {NAT_TABLE}",
        f"table ip {NAT_TABLE} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority -100; policy accept;",
    ]
    pairs = [(f["floating_ip_address"], f["fixed_ip_address"]) for f in floating_ips]
    if gateway_device:
        lines += [f"    ip daddr {fip} dnat to {fixed}" for fip, fixed in pairs]
    lines += [
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
    ]
    if gateway_device:
        lines += [f"    ip daddr {fip} dnat to {fixed}" for fip, fixed in pairs]
    lines += [
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority 100; policy accept;",
    ]
    if gateway_device:
        out = f'oifname "{gateway_device}"'
        lines += [f"    {out} ip saddr {fixed} snat to {fip}" for fip, fixed in pairs]
        v4 = [c for c in internal_cidrs if ipaddress.ip_network(c).version == 4]
        if enable_snat and gateway_address and v4:
            lines.append(f"    {out} ip saddr {{ {', '.join(v4)} }} snat to {gateway_address}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


async def ensure(
    router: dict[str, Any],
    ports: list[dict[str, Any]],
    networks: dict[str, dict[str, Any]],
    root: Path,
) -> None:
    """Build or update the router's namespace from its ports (gateway and interfaces).

    ``root`` holds the files of the router's radvd.
    """
    name = namespace(router["id"])
    await commands.ensure_netns(name)
    await commands.in_netns(name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    # Routed, so no autoconfiguration; the addresses are ours, so no duplicate detection.
    await commands.ipv6_defaults(name, forwarding=1, accept_dad=0)
    wanted: set[str] = set()
    gateway_device = gateway_address = None
    next_hops: list[str] = []
    internal: list[str] = []
    advertised: list[tuple[str, list[dict[str, Any]], int]] = []
    for port in ports:
        network = networks.get(port["network_id"])
        if network is None or not port["fixed_ips"]:
            continue
        is_gateway = port["device_owner"] == GATEWAY_OWNER
        inner = ("qg-" if is_gateway else "qr-") + port["id"][:11]
        wanted.add(inner)
        await bridges.ensure_bridge(bridges.bridge_name(network["id"]), network["mtu"])
        await bridges.ensure_veth(
            bridges.tap_name(port["id"]),
            inner,
            name,
            bridges.bridge_name(network["id"]),
            port["mac_address"],
            network["mtu"],
        )
        addresses = [_interface(f) for f in port["fixed_ips"]]
        subnets = {s["id"]: s for s in network["subnets"]}
        if is_gateway:
            gateway_device = inner
            v4 = [f["ip_address"] for f in port["fixed_ips"] if _version(f["ip_address"]) == 4]
            gateway_address = v4[0] if v4 else None
            addresses += [f"{f['floating_ip_address']}/32" for f in router["floating_ips"]]
            # One default route per IP version, through that version's first subnet.
            for version in (4, 6):
                held = [f for f in port["fixed_ips"] if _version(f["ip_address"]) == version]
                first = subnets.get(held[0]["subnet_id"]) if held else None
                if first and first.get("gateway_ip"):
                    next_hops.append(first["gateway_ip"])
        else:
            internal += [str(ipaddress.ip_network(f["cidr"])) for f in port["fixed_ips"]]
            v6 = [
                subnets[f["subnet_id"]]
                for f in port["fixed_ips"]
                if f["subnet_id"] in subnets and _version(f["ip_address"]) == 6
            ]
            advertised.append((inner, v6, network["mtu"]))
        await bridges.set_addresses(inner, addresses, name)
    for link in await commands.links(netns=name):
        if link["ifname"] != "lo" and link["ifname"] not in wanted:
            await commands.delete_link(link["ifname"], netns=name)
    await _routes(name, router["routes"], next_hops if gateway_device else [])
    await commands.nft(
        nat_ruleset(
            gateway_device, gateway_address, internal, router["floating_ips"], router["enable_snat"]
        ),
        netns=name,
    )
    await radvd.Advertiser(root, router["id"], name).ensure(advertised)


def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


async def _routes(netns: str, routes: list[dict[str, str]], next_hops: list[str]) -> None:
    """Make the static routes (and the default ones via ``next_hops``) exactly these."""
    wanted = {(r["destination"], r["nexthop"]) for r in routes}
    wanted |= {("default", hop) for hop in next_hops}
    present = set()
    for family in ("-4", "-6"):
        shown = await commands.ip_json(family, "route", "show", "proto", "static", netns=netns)
        for route in shown:
            key = (route["dst"], route.get("gateway", ""))
            if key in wanted:
                present.add(key)
            else:
                await ip(family, "route", "del", route["dst"], netns=netns, check=False)
    for destination, nexthop in wanted - present:
        family = f"-{_version(nexthop)}"
        await ip(
            family, "route", "replace", destination, "via", nexthop, "proto", "static",
            netns=netns, check=False,
        )  # fmt: skip


async def remove(router_id: str, root: Path) -> None:
    """Remove the router's namespace with its legs, and its radvd."""
    await radvd.Advertiser(root, router_id, namespace(router_id)).remove()
    await commands.delete_netns(namespace(router_id))
