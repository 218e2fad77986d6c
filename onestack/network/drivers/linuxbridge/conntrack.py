"""Cutting the connections a narrowed security group (or a moved floating IP) no longer allows.

The security-group chains accept packets of established connections before any rule
is looked at, so a removed rule would leave running what it let in. After the ruleset
changes, the agent deletes the connection-tracking entries of the ports whose filtering
was narrowed (``conntrack -D``, from conntrack-tools): their next packet is judged by
the new rules. Bridged traffic is tracked in the host's namespace, without NAT, so the
port's addresses find its entries. A router that stops holding a floating IP (moved to
another host, or released) likewise forgets its translated connections.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from onestack.network.drivers.linuxbridge import commands
from onestack.network.drivers.linuxbridge.firewall import secured

log = logging.getLogger(__name__)


class RuleKey(NamedTuple):
    """What a security group rule lets through (its id aside)."""

    direction: str
    ethertype: str
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None

    @classmethod
    def of(cls, rule: dict[str, Any]) -> RuleKey:
        return cls(rule["direction"], rule["ethertype"], *(rule.get(f) for f in cls._fields[2:]))

    @property
    def remote_group(self) -> str | None:
        """The group whose members' addresses the rule matches (a prefix takes precedence)."""
        return None if self.remote_ip_prefix else self.remote_group_id


@dataclass
class Allowances:
    """What the filtering of a host's ports lets in and out.

    ``ports`` maps a port id to its fixed addresses and the keys of its rules (None
    when the port is not filtered); ``members`` maps a security group referenced as
    a remote group to its members' addresses.
    """

    ports: dict[str, tuple[list[str], frozenset[RuleKey] | None]] = field(default_factory=dict)
    members: dict[str, frozenset[str]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Keep them on disk: an agent restarted after a rule went still cuts its flows."""
        ports = {
            ident: [addresses, None if rules is None else sorted(rules, key=repr)]
            for ident, (addresses, rules) in self.ports.items()
        }
        members = {group: sorted(addresses) for group, addresses in self.members.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"ports": ports, "members": members}))

    @classmethod
    def load(cls, path: Path) -> Allowances:
        """What :meth:`save` kept; none when nothing was (or it cannot be read)."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        ports = {
            ident: (addresses, None if rules is None else frozenset(RuleKey(*r) for r in rules))
            for ident, (addresses, rules) in saved["ports"].items()
        }
        members = {group: frozenset(addresses) for group, addresses in saved["members"].items()}
        return cls(ports, members)


def allowances(ports: list[dict[str, Any]], groups: dict[str, dict[str, Any]]) -> Allowances:
    """The allowances of ``ports`` under ``groups`` (both as in the desired state)."""
    found = Allowances()
    for port in ports:
        addresses = [ip["ip_address"] for ip in port["fixed_ips"]]
        if not secured(port):
            found.ports[port["id"]] = (addresses, None)
            continue
        rules = [r for g in port["security_groups"] for r in groups.get(g, {}).get("rules", [])]
        keys = frozenset(RuleKey.of(r) for r in rules)
        found.ports[port["id"]] = (addresses, keys)
        for key in keys:
            if key.remote_group and key.remote_group not in found.members:
                members = groups.get(key.remote_group, {}).get("members", [])
                found.members[key.remote_group] = frozenset(members)
    return found


def narrowed(before: Allowances, after: Allowances) -> list[str]:
    """Addresses of the ports whose filtering lets less through ``after`` than ``before``.

    A port filtered now and not before (port security turned on), a rule gone (removed,
    or its group taken off the port) and an address gone from a remote group all narrow
    it. Ports new to the host have no connections to cut.
    """
    shrunk = {
        group
        for group, members in before.members.items()
        if members - after.members.get(group, members)
    }
    cut: list[str] = []
    for port_id, (addresses, rules) in after.ports.items():
        if port_id not in before.ports or rules is None:
            continue
        old_rules = before.ports[port_id][1]
        if (
            old_rules is None
            or old_rules - rules
            or any(key.remote_group in shrunk for key in rules)
        ):
            cut += addresses
    return cut


async def forget(
    addresses: list[str] | set[str],
    netns: str | None = None,
    sides: tuple[str, ...] = ("--orig-src", "--orig-dst"),
) -> None:
    """Delete the tracked connections from or to ``addresses`` (in ``netns``, else the
    host's namespace); ``sides`` are the conntrack options the address is matched with."""
    if not addresses:
        return
    if shutil.which("conntrack") is None:
        log.warning(
            "conntrack (conntrack-tools) missing: connections of %s keep running", addresses
        )
        return
    inside = ("ip", "netns", "exec", netns) if netns else ()
    for address in sorted(set(addresses)):
        family = "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"
        for side in sides:
            # Exit code 1 only says that no entry matched.
            await commands.run(*inside, "conntrack", "-D", "-f", family, side, address, check=False)


async def forget_floating(addresses: set[str], netns: str) -> None:
    """Delete a router's connections translated to or from these floating IPs: those that
    came in to them (DNAT) and those their guests opened (SNAT: the replies come to them)."""
    await forget(addresses, netns, sides=("--orig-dst", "--reply-dst"))
