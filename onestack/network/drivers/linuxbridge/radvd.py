"""IPv6 router advertisements: radvd in a router's namespace, as Neutron's L3 agent runs it.

Each internal leg with an IPv6 subnet advertises the router as the link's default
router with the link MTU and the subnets' DNS servers (RDNSS); a subnet's prefix is
announced according to its ``ipv6_ra_mode``: ``slaac`` and ``dhcpv6-stateless`` as
autonomous (hosts make EUI-64 addresses; stateless also sets the other-config flag
for DHCPv6 options), ``dhcpv6-stateful`` as on-link only with the managed flag (hosts
ask DHCPv6 for their address). Subnets without an RA mode are not announced.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from onestack.network.drivers.linuxbridge import commands, daemons

log = logging.getLogger(__name__)

AUTONOMOUS_MODES = ("slaac", "dhcpv6-stateless")
# Unsolicited advertisements between these (seconds); hosts solicit one when they come up.
MIN_INTERVAL = 10
MAX_INTERVAL = 30
IPV6_MIN_MTU = 1280


def interface_block(device: str, subnets: list[dict[str, Any]], mtu: int) -> str:
    """The radvd ``interface`` stanza of one leg holding ``subnets`` (its IPv6 ones)."""
    modes = {s.get("ipv6_ra_mode") for s in subnets}
    lines = [
        f"interface {device}",
        "{",
        "  AdvSendAdvert on;",
        f"  MinRtrAdvInterval {MIN_INTERVAL};",
        f"  MaxRtrAdvInterval {MAX_INTERVAL};",
    ]
    if mtu >= IPV6_MIN_MTU:
        lines.append(f"  AdvLinkMTU {mtu};")
    if "dhcpv6-stateful" in modes:
        lines.append("  AdvManagedFlag on;")
    if "dhcpv6-stateless" in modes:
        lines.append("  AdvOtherConfigFlag on;")
    servers = sorted({d for s in subnets for d in s.get("dns_nameservers") or []})
    if servers:
        lines.append(f"  RDNSS {' '.join(servers)} {{}};")
    for subnet in subnets:
        mode = subnet.get("ipv6_ra_mode")
        if mode is None:
            continue
        autonomous = "on" if mode in AUTONOMOUS_MODES else "off"
        lines += [
            f"  prefix {ipaddress.ip_network(subnet['cidr'])}",
            "  {",
            "    AdvOnLink on;",
            f"    AdvAutonomous {autonomous};",
            "  };",
        ]
    lines.append("};")
    return "\n".join(lines)


def config(legs: list[tuple[str, list[dict[str, Any]], int]]) -> str:
    """radvd.conf for the router's legs: (device, its IPv6 subnets, MTU); empty when none."""
    blocks = [interface_block(device, subnets, mtu) for device, subnets, mtu in legs if subnets]
    return "\n".join(blocks) + "\n" if blocks else ""


class Advertiser:
    """The radvd of one router namespace, its files under ``root/<router id>``."""

    def __init__(self, root: Path, router_id: str, netns: str):
        self.netns = netns
        self.directory = root / router_id
        self.conf = self.directory / "radvd.conf"
        self.pid_file = self.directory / "radvd.pid"

    async def ensure(self, legs: list[tuple[str, list[dict[str, Any]], int]]) -> None:
        """Run radvd with the legs' configuration (reloaded on change), or none without any."""
        text = config(legs)
        pid = daemons.running(self.pid_file)
        if not text:
            await self.remove()
            return
        if shutil.which("radvd") is None:
            # Routing still works; hosts just get no addresses or routes by SLAAC.
            log.warning("no radvd installed: %s sends no IPv6 advertisements", self.netns)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        changed = daemons.write(self.conf, text)
        if pid is None:
            await commands.start_daemon(
                self.netns, "radvd", "-C", str(self.conf), "-p", str(self.pid_file),
                "-m", "logfile", "-l", str(self.directory / "radvd.log"),
            )  # fmt: skip
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def remove(self) -> None:
        """Stop radvd and remove its files."""
        pid = daemons.running(self.pid_file)
        if pid is not None:
            await daemons.stop(pid, self.pid_file)
        shutil.rmtree(self.directory, ignore_errors=True)
