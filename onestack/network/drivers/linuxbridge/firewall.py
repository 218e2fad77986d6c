"""Security groups and anti-spoofing as nftables rules on the bridge ports.

Two tables, each replaced atomically as a whole on every change (so a deleted port
or group leaves nothing behind):

- ``bridge onestack_antispoof_<tag>``: frames a guest sends must carry its MAC and
  addresses (or an allowed address pair's; for IPv6 also the link-local address each
  of those MACs gives itself, and the unspecified address for duplicate address
  detection and MLD only), and it may not answer DHCP or DHCPv6 nor advertise itself
  as an IPv6 router.
- ``inet onestack_sg_<tag>``: bridged IP traffic (seen through br_netfilter, hence
  connection tracking: stateful rules) passes each port's egress chain, then the
  destination port's ingress chain; both end in drop, so ingress is denied unless
  a rule allows it. Ports are told apart by their bridge and their (anti-spoofed)
  addresses. As Neutron, whatever the rules say, a port may send router and
  neighbour solicitations, neighbour advertisements, MLD and DHCP(v6) requests, and
  receive neighbour discovery, MLD queries, router advertisements (from link-local
  addresses: rogue ones are stopped where they enter) and DHCP(v6) replies.

A third, ``bridge onestack_overlay_<tag>`` (:func:`overlay_ruleset`), keeps the frames of
the network's own ports (DHCP, router legs) off the VXLAN tunnels: every host builds
those ports alike, with the same MACs, and serves its own guests with them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from onestack.network.drivers.linuxbridge.bridges import VXLAN_PREFIX, bridge_name, tap_name
from onestack.network.ipam import link_local

ANTISPOOF_PREFIX = "onestack_antispoof_"
GROUPS_PREFIX = "onestack_sg_"
OVERLAY_PREFIX = "onestack_overlay_"
PROTOCOLS = {
    "tcp": "tcp",
    "6": "tcp",
    "udp": "udp",
    "17": "udp",
    "icmp": "icmp",
    "1": "icmp",
    "ipv6-icmp": "icmpv6",
    "icmpv6": "icmpv6",
    "58": "icmpv6",
}


# ICMPv6 a port always sends and receives (Neutron's allowed types), whatever its rules say.
EGRESS_ICMPV6 = (
    "{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, "
    "mld-listener-report, mld2-listener-report }"
)
INGRESS_ICMPV6 = "{ nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }"
# What may come from the unspecified address (before a host has one): DAD and MLD.
UNSPECIFIED_SOURCE_TYPES = "{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report }"


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _chain_id(port_id: str) -> str:
    return port_id.replace("-", "")[:16]


def secured(port: dict[str, Any]) -> bool:
    """Whether the port gets filtering: a guest's port with port security on."""
    return bool(port["port_security_enabled"]) and not port["device_owner"].startswith("network:")


def _macs(port: dict[str, Any]) -> list[str]:
    """The MACs the port may send from: its own and its allowed address pairs'."""
    own = port["mac_address"]
    pairs = port.get("allowed_address_pairs", [])
    return sorted({own, *(p.get("mac_address") or own for p in pairs)})


def _addresses(port: dict[str, Any], version: int) -> list[str]:
    """The addresses the port may use: fixed, allowed pairs' and (IPv6) link-local ones."""
    found = [ip["ip_address"] for ip in port["fixed_ips"]]
    found += [pair["ip_address"] for pair in port.get("allowed_address_pairs", [])]
    if version == 6:
        found += [link_local(mac) for mac in _macs(port)]
    return [
        str(ipaddress.ip_network(a, strict=False))
        for a in found
        if ipaddress.ip_network(a, strict=False).version == version
    ]


def _antispoof_chain(port: dict[str, Any]) -> list[str]:
    name = f"spoof_{_chain_id(port['id'])}"
    v4 = [*_addresses(port, 4), "0.0.0.0"]
    v6 = _addresses(port, 6)
    return [
        f"  chain {name} {{",
        f"    ether saddr != {_set(_macs(port))} drop",
        f"    arp saddr ip != {_set(v4)} drop",
        "    ether type ip udp sport 67 drop",
        f"    ether type ip ip saddr != {_set(v4)} drop",
        "    ether type ip6 udp sport 547 drop",
        "    ether type ip6 icmpv6 type nd-router-advert drop",
        f"    ether type ip6 ip6 saddr :: icmpv6 type {UNSPECIFIED_SOURCE_TYPES} return",
        f"    ether type ip6 ip6 saddr != {_set(v6)} drop",
        "  }",
    ]


def _member_set(group_id: str, version: int) -> str:
    return f"members_{_chain_id(group_id)}_{version}"


def _match(rule: dict[str, Any], version: int) -> str:
    """The nft match of one security group rule (remote groups through named sets)."""
    family = "ip" if version == 4 else "ip6"
    direction = rule["direction"]
    peer = "saddr" if direction == "ingress" else "daddr"
    parts = [f"meta nfproto {'ipv4' if version == 4 else 'ipv6'}"]
    if rule.get("remote_ip_prefix"):
        parts.append(f"{family} {peer} {rule['remote_ip_prefix']}")
    elif rule.get("remote_group_id"):
        parts.append(f"{family} {peer} @{_member_set(rule['remote_group_id'], version)}")
    protocol = rule.get("protocol")
    if protocol not in (None, "", "any"):
        name = PROTOCOLS.get(str(protocol).lower())
        low, high = rule.get("port_range_min"), rule.get("port_range_max")
        if name in ("tcp", "udp"):
            parts.append(f"meta l4proto {name}")
            if low is not None:
                parts.append(f"{name} dport {low}-{high if high is not None else low}")
        elif name in ("icmp", "icmpv6"):
            # "icmp" in an IPv6 rule means ICMPv6, as in Neutron.
            name = "icmp" if version == 4 else "icmpv6"
            parts.append(f"meta l4proto {'icmp' if version == 4 else 'ipv6-icmp'}")
            if low is not None:
                parts.append(f"{name} type {low}")
                if high is not None:
                    parts.append(f"{name} code {high}")
        else:
            parts.append(f"meta l4proto {int(protocol)}")
    return " ".join(parts)


def _group_chains(port: dict[str, Any], groups: dict[str, dict[str, Any]]) -> list[str]:
    ident = _chain_id(port["id"])
    rules = [rule for g in port["security_groups"] for rule in groups.get(g, {}).get("rules", [])]
    lines = [
        f"  chain egress_{ident} {{",
        f"    icmpv6 type {EGRESS_ICMPV6} return",
        "    meta nfproto ipv4 udp sport 68 udp dport 67 return",
        "    meta nfproto ipv6 udp sport 546 udp dport 547 return",
        "    ct state established,related return",
        "    ct state invalid drop",
    ]
    for rule in rules:
        for version in (4, 6):
            if rule["direction"] == "egress" and rule["ethertype"] == f"IPv{version}":
                lines.append(f"    {_match(rule, version)} return")
    lines += [
        "    drop",
        "  }",
        f"  chain ingress_{ident} {{",
        f"    icmpv6 type {INGRESS_ICMPV6} accept",
        "    ip6 saddr fe80::/10 icmpv6 type nd-router-advert accept",
        "    meta nfproto ipv4 udp sport 67 udp dport 68 accept",
        "    meta nfproto ipv6 udp sport 547 udp dport 546 accept",
        "    ct state established,related accept",
        "    ct state invalid drop",
    ]
    for rule in rules:
        for version in (4, 6):
            if rule["direction"] == "ingress" and rule["ethertype"] == f"IPv{version}":
                lines.append(f"    {_match(rule, version)} accept")
    lines += ["    drop", "  }"]
    return lines


def ruleset(ports: list[dict[str, Any]], groups: dict[str, dict[str, Any]], tag: str) -> str:
    """Both tables for ``ports`` (as the service describes them), replacing what was there.

    ``groups`` maps a group id to ``{"rules": [...], "members": [addresses]}``; ``tag``
    names this deployment's tables (several clouds may share a host; their tables compose:
    a drop in any is final).
    """
    spoof_table = f"{ANTISPOOF_PREFIX}{tag}"
    group_table = f"{GROUPS_PREFIX}{tag}"
    members = {gid: group.get("members", []) for gid, group in groups.items()}
    protected = [p for p in ports if secured(p)]
    # A guest's port that is administratively down passes no frame either way.
    disabled = [
        p
        for p in ports
        if not p.get("admin_state_up", True) and not p["device_owner"].startswith("network:")
    ]
    if not protected and not disabled:
        return teardown(tag)  # nothing to filter: no tables left on the host
    spoof = [
        f"table bridge {spoof_table}",
        f"delete table bridge {spoof_table}",
        f"table bridge {spoof_table} {{",
        "  chain prerouting {",
        "    type filter hook prerouting priority -300; policy accept;",
    ]
    spoof += [f'    iifname "{tap_name(p["id"])}" drop' for p in disabled]
    spoof += [
        f'    iifname "{tap_name(p["id"])}" jump spoof_{_chain_id(p["id"])}' for p in protected
    ]
    spoof.append("  }")
    if disabled:
        spoof += ["  chain forward {", "    type filter hook forward priority -300; policy accept;"]
        spoof += [f'    oifname "{tap_name(p["id"])}" drop' for p in disabled]
        spoof.append("  }")
    for port in protected:
        spoof += _antispoof_chain(port)
    spoof.append("}")
    filters = [
        f"table inet {group_table}",
        f"delete table inet {group_table}",
        f"table inet {group_table} {{",
    ]
    # Remote groups are named sets of their members' addresses: each rule refers to its
    # set instead of repeating the addresses (which would grow with the square of ports).
    remote = {
        rule["remote_group_id"]
        for port in protected
        for group in port["security_groups"]
        for rule in groups.get(group, {}).get("rules", [])
        if rule.get("remote_group_id") and not rule.get("remote_ip_prefix")
    }
    for group_id in sorted(remote):
        for version, kind in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            addresses = sorted(
                {
                    str(ipaddress.ip_network(a, strict=False))
                    for a in members.get(group_id, [])
                    if ipaddress.ip_network(a, strict=False).version == version
                }
            )
            elements = f" elements = {_set(addresses)};" if addresses else ""
            name = _member_set(group_id, version)
            filters.append(f"  set {name} {{ type {kind}; flags interval; auto-merge;{elements} }}")
    by_bridge: dict[str, list[dict[str, Any]]] = {}
    for port in protected:
        by_bridge.setdefault(bridge_name(port["network_id"]), []).append(port)
    filters += [
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
    ]
    filters += [f'    iifname "{b}" jump from_{b}' for b in sorted(by_bridge)]
    filters += [f'    oifname "{b}" jump to_{b}' for b in sorted(by_bridge)]
    filters.append("  }")
    for bridge, members_of_bridge in sorted(by_bridge.items()):
        for direction, prefix, peer in (("egress", "from", "saddr"), ("ingress", "to", "daddr")):
            filters.append(f"  chain {prefix}_{bridge} {{")
            for port in members_of_bridge:
                for version, family in ((4, "ip"), (6, "ip6")):
                    addresses = _addresses(port, version)
                    if addresses:
                        filters.append(
                            f"    {family} {peer} {_set(addresses)} "
                            f"jump {direction}_{_chain_id(port['id'])}"
                        )
            filters.append("  }")
    for port in protected:
        filters += _group_chains(port, groups)
    filters.append("}")
    return "\n".join(spoof + filters) + "\n"


def teardown(tag: str) -> str:
    """A ruleset that removes both tables of the deployment ``tag``."""
    spoof_table = f"{ANTISPOOF_PREFIX}{tag}"
    group_table = f"{GROUPS_PREFIX}{tag}"
    return (
        f"table bridge {spoof_table}\ndelete table bridge {spoof_table}\n"
        f"table inet {group_table}\ndelete table inet {group_table}\n"
    )


def overlay_ruleset(macs: list[str], tag: str) -> str:
    """Frames from ``macs`` (the networks' own ports) neither enter nor leave a VXLAN device.

    Without any such MAC the table is removed.
    """
    table = f"{OVERLAY_PREFIX}{tag}"
    lines = [f"table bridge {table}", f"delete table bridge {table}"]
    if macs:
        tunnels = f'"{VXLAN_PREFIX}*"'
        lines += [
            f"table bridge {table} {{",
            "  chain forward {",
            "    type filter hook forward priority -200; policy accept;",
            f"    iifname {tunnels} ether saddr {_set(sorted(set(macs)))} drop",
            f"    oifname {tunnels} ether saddr {_set(sorted(set(macs)))} drop",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"
