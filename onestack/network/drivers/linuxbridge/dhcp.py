"""DHCP per network: a ``qdhcp-<network>`` namespace on the bridge with dnsmasq in it.

dnsmasq serves only the ports' fixed addresses (static ranges, a hosts file) with
each subnet's gateway, DNS servers, MTU and host routes, plus a route to the
metadata address (169.254.169.254, held by the namespace's interface).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from onestack.network.drivers.linuxbridge import bridges, commands

NAMESPACE_PREFIX = "qdhcp-"
METADATA_ADDRESS = "169.254.169.254"
LEASE = "86400s"


def namespace(network_id: str) -> str:
    return NAMESPACE_PREFIX + network_id


def inner_name(port_id: str) -> str:
    return "ns-" + port_id[:11]


def _tag(subnet_id: str) -> str:
    return "subnet-" + subnet_id.replace("-", "")[:16]


def hosts_file(network: dict[str, Any], ports: list[dict[str, Any]], dhcp_port_id: str) -> str:
    """One line per (MAC, IPv4 address) of the network's ports."""
    dhcp_subnets = {s["id"] for s in network["subnets"] if s["enable_dhcp"]}
    lines = []
    for port in ports:
        if port["id"] == dhcp_port_id:
            continue
        for ip in port["fixed_ips"]:
            address = ipaddress.ip_address(ip["ip_address"])
            if ip["subnet_id"] in dhcp_subnets and address.version == 4:
                hostname = "host-" + str(address).replace(".", "-")
                lines.append(f"{port['mac_address']},{address},{hostname}")
    return "\n".join(sorted(lines)) + "\n"


def options_file(network: dict[str, Any], dhcp_addresses: dict[str, str]) -> str:
    """Per subnet: router, DNS servers, MTU and classless routes (metadata, host routes)."""
    lines = []
    for subnet in network["subnets"]:
        if not subnet["enable_dhcp"] or subnet["ip_version"] != 4:
            continue
        tag = f"tag:{_tag(subnet['id'])}"
        gateway = subnet.get("gateway_ip")
        lines.append(f"{tag},option:router{',' + gateway if gateway else ''}")
        if subnet["dns_nameservers"]:
            lines.append(f"{tag},option:dns-server,{','.join(subnet['dns_nameservers'])}")
        lines.append(f"{tag},option:mtu,{network['mtu']}")
        routes = []
        if subnet["id"] in dhcp_addresses:
            routes.append(f"{METADATA_ADDRESS}/32,{dhcp_addresses[subnet['id']]}")
        routes += [f"{r['destination']},{r['nexthop']}" for r in subnet["host_routes"]]
        if gateway:
            routes.append(f"0.0.0.0/0,{gateway}")
        lines.append(f"{tag},option:classless-static-route,{','.join(routes)}")
    return "\n".join(lines) + "\n"


class DhcpServer:
    """The DHCP namespace and dnsmasq of one network, its files under ``directory``."""

    def __init__(self, root: Path, network_id: str):
        self.network_id = network_id
        self.namespace = namespace(network_id)
        self.directory = root / network_id
        self.pid_file = self.directory / "pid"
        self.hosts = self.directory / "hosts"
        self.options = self.directory / "opts"

    def _argv(self, interface: str, network: dict[str, Any]) -> list[str]:
        argv = [
            "dnsmasq",
            "--no-hosts",
            "--no-resolv",
            "--port=0",
            "--bind-interfaces",
            f"--interface={interface}",
            "--except-interface=lo",
            f"--pid-file={self.pid_file}",
            f"--dhcp-hostsfile={self.hosts}",
            f"--dhcp-optsfile={self.options}",
            "--leasefile-ro",
            "--dhcp-authoritative",
            "--user=root",
            f"--log-facility={self.directory / 'dnsmasq.log'}",
            "--log-dhcp",
        ]
        for subnet in network["subnets"]:
            if subnet["enable_dhcp"] and subnet["ip_version"] == 4:
                cidr = ipaddress.ip_network(subnet["cidr"])
                argv.append(
                    f"--dhcp-range=set:{_tag(subnet['id'])},{cidr.network_address},static,"
                    f"{cidr.netmask},{LEASE}"
                )
        return argv

    def pid(self) -> int | None:
        """The running dnsmasq's pid (checked against /proc), or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.pid_file).encode() in cmdline else None

    async def ensure(
        self, network: dict[str, Any], dhcp_port: dict[str, Any], ports: list[dict[str, Any]]
    ) -> None:
        """Namespace, interface on the bridge, files and dnsmasq as ``network`` says."""
        await commands.ensure_netns(self.namespace)
        inner = inner_name(dhcp_port["id"])
        bridge = bridges.bridge_name(self.network_id)
        await bridges.ensure_veth(
            bridges.tap_name(dhcp_port["id"]),
            inner,
            self.namespace,
            bridge,
            dhcp_port["mac_address"],
            network["mtu"],
        )
        addresses = [
            f"{ip['ip_address']}/{ipaddress.ip_network(ip['cidr']).prefixlen}"
            for ip in dhcp_port["fixed_ips"]
        ]
        await bridges.set_addresses(inner, [*addresses, f"{METADATA_ADDRESS}/32"], self.namespace)
        self.directory.mkdir(parents=True, exist_ok=True)
        dhcp_addresses = {ip["subnet_id"]: ip["ip_address"] for ip in dhcp_port["fixed_ips"]}
        before = set(self.hosts.read_text().splitlines()) if self.hosts.exists() else set()
        hosts = hosts_file(network, ports, dhcp_port["id"])
        changed = _write(self.hosts, hosts)
        changed |= _write(self.options, options_file(network, dhcp_addresses))
        argv = self._argv(inner, network)
        restart = _write(self.directory / "argv", "\n".join(argv) + "\n")
        # A removed host entry may still hold a lease (kept in memory only: --leasefile-ro)
        # that would keep its address from the next port given it; a restart forgets it.
        restart |= bool(before - set(hosts.splitlines()))
        pid = self.pid()
        if pid is not None and restart:
            await self._kill(pid)
            pid = None
        if pid is None:
            await commands.in_netns(self.namespace, *argv)
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def _kill(self, pid: int) -> None:
        """SIGTERM, and wait (up to 5 s) until it is gone and its DHCP socket with it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(500):
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                break
            await asyncio.sleep(0.01)
        self.pid_file.unlink(missing_ok=True)

    async def remove(self) -> None:
        """Stop dnsmasq and remove the namespace and files."""
        pid = self.pid()
        if pid is not None:
            await self._kill(pid)
        await commands.delete_netns(self.namespace)
        shutil.rmtree(self.directory, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _write(path: Path, text: str) -> bool:
    """Write ``text`` unless ``path`` already holds it; whether it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True
