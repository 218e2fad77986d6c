"""Routers: a ``qrouter-<id>`` namespace with one leg per subnet and one on the external network.

Forwarding is on inside it; nftables (table ``ip onestack_nat``, replaced as a whole)
does SNAT of the internal subnets to the gateway address and the floating IPs' DNAT
and SNAT; static routes are ``ip route`` entries with protocol ``static``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from onestack.network.drivers.linuxbridge import bridges, commands
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
) -> None:
    """Build or update the router's namespace from its ports (gateway and interfaces)."""
    name = namespace(router["id"])
    await commands.ensure_netns(name)
    await commands.in_netns(name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    wanted: set[str] = set()
    gateway_device = gateway_address = gateway_next_hop = None
    internal: list[str] = []
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
        if is_gateway:
            gateway_device = inner
            gateway_address = port["fixed_ips"][0]["ip_address"]
            addresses += [f"{f['floating_ip_address']}/32" for f in router["floating_ips"]]
            subnets = {s["id"]: s for s in network["subnets"]}
            first = subnets.get(port["fixed_ips"][0]["subnet_id"])
            gateway_next_hop = first.get("gateway_ip") if first else None
        else:
            internal += [str(ipaddress.ip_network(f["cidr"])) for f in port["fixed_ips"]]
        await bridges.set_addresses(inner, addresses, name)
    for link in await commands.links(netns=name):
        if link["ifname"] != "lo" and link["ifname"] not in wanted:
            await commands.delete_link(link["ifname"], netns=name)
    await _routes(name, router["routes"], gateway_device, gateway_next_hop)
    await commands.nft(
        nat_ruleset(
            gateway_device, gateway_address, internal, router["floating_ips"], router["enable_snat"]
        ),
        netns=name,
    )


async def _routes(
    netns: str, routes: list[dict[str, str]], gateway_device: str | None, next_hop: str | None
) -> None:
    wanted = {(r["destination"], r["nexthop"]) for r in routes}
    if gateway_device and next_hop:
        wanted.add(("default", next_hop))
    present = set()
    for route in await commands.ip_json("route", "show", "proto", "static", netns=netns):
        key = (route["dst"], route.get("gateway", ""))
        if key in wanted:
            present.add(key)
        else:
            await ip("route", "del", route["dst"], netns=netns, check=False)
    for destination, nexthop in wanted - present:
        await ip(
            "route", "replace", destination, "via", nexthop, "proto", "static", netns=netns,
            check=False,
        )  # fmt: skip


async def remove(router_id: str) -> None:
    """Remove the router's namespace with its legs."""
    await commands.delete_netns(namespace(router_id))
