"""DHCP per network: a ``qdhcp-<network>`` namespace on the bridge with dnsmasq in it.

dnsmasq serves only the ports' fixed addresses (static ranges, a hosts file) with
each subnet's gateway, DNS servers, MTU and host routes, plus a route to the
metadata address (169.254.169.254, held by the namespace's interface).

IPv6 as Neutron: DHCPv6 for ``dhcpv6-stateful`` subnets (and those with no IPv6 mode),
addresses from the hosts file by MAC; ``dhcpv6-stateless`` subnets get options only
(DNS servers); SLAAC subnets get nothing here. Router advertisements come from the
router's namespace (see ``routers.py``), never from this one.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from onestack.network.drivers.linuxbridge import bridges, commands, daemons

NAMESPACE_PREFIX = "qdhcp-"
METADATA_ADDRESS = "169.254.169.254"
LEASE = "86400s"


def namespace(network_id: str) -> str:
    return NAMESPACE_PREFIX + network_id


def inner_name(port_id: str) -> str:
    return "ns-" + port_id[:11]


def _tag(subnet_id: str) -> str:
    return "subnet-" + subnet_id.replace("-", "")[:16]


def dhcpv6_mode(subnet: dict[str, Any]) -> str | None:
    """How dnsmasq serves an IPv6 subnet: "stateful", "stateless" (options only) or None."""
    if subnet["ip_version"] != 6 or not subnet["enable_dhcp"]:
        return None
    address_mode, ra_mode = subnet.get("ipv6_address_mode"), subnet.get("ipv6_ra_mode")
    if address_mode == "dhcpv6-stateful" or not (address_mode or ra_mode):
        return "stateful"
    return "stateless" if address_mode == "dhcpv6-stateless" else None


def _served(subnet: dict[str, Any]) -> bool:
    """Whether dnsmasq answers for the subnet at all (DHCPv4, or DHCPv6 of either kind)."""
    if subnet["ip_version"] == 4:
        return bool(subnet["enable_dhcp"])
    return dhcpv6_mode(subnet) is not None


def hosts_file(network: dict[str, Any], ports: list[dict[str, Any]], dhcp_port_id: str) -> str:
    """One line per (MAC, address) of the network's ports that dnsmasq hands out.

    IPv4 addresses of DHCP subnets and IPv6 addresses of stateful DHCPv6 subnets (in
    brackets; dnsmasq finds a DHCPv6 client's MAC from its link-local address).
    """
    handed = {
        s["id"]
        for s in network["subnets"]
        if (s["ip_version"] == 4 and s["enable_dhcp"]) or dhcpv6_mode(s) == "stateful"
    }
    lines = []
    for port in ports:
        if port["id"] == dhcp_port_id:
            continue
        for ip in port["fixed_ips"]:
            if ip["subnet_id"] not in handed:
                continue
            address = ipaddress.ip_address(ip["ip_address"])
            hostname = "host-" + str(address).replace(".", "-").replace(":", "-")
            shown = f"[{address}]" if address.version == 6 else str(address)
            lines.append(f"{port['mac_address']},{shown},{hostname}")
    return "\n".join(sorted(lines)) + "\n"


def options_file(network: dict[str, Any], dhcp_addresses: dict[str, str]) -> str:
    """Per subnet: router, DNS servers, MTU and classless routes (metadata, host routes).

    DHCPv6 has no router, MTU or route options (the router advertisements carry them):
    its subnets get their DNS servers only.
    """
    lines = []
    for subnet in network["subnets"]:
        tag = f"tag:{_tag(subnet['id'])}"
        if dhcpv6_mode(subnet) and subnet["dns_nameservers"]:
            servers = ",".join(f"[{server}]" for server in subnet["dns_nameservers"])
            lines.append(f"{tag},option6:dns-server,{servers}")
        if not subnet["enable_dhcp"] or subnet["ip_version"] != 4:
            continue
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
            if not _served(subnet):
                continue
            cidr = ipaddress.ip_network(subnet["cidr"])
            # IPv4 ranges take a netmask, IPv6 ones a prefix length.
            mask = cidr.netmask if cidr.version == 4 else cidr.prefixlen
            argv.append(
                f"--dhcp-range=set:{_tag(subnet['id'])},{cidr.network_address},static,"
                f"{mask},{LEASE}"
            )
        return argv

    def pid(self) -> int | None:
        """The running dnsmasq's pid, or None."""
        return daemons.running(self.pid_file)

    async def ensure(
        self, network: dict[str, Any], dhcp_port: dict[str, Any], ports: list[dict[str, Any]]
    ) -> None:
        """Namespace, interface on the bridge, files and dnsmasq as ``network`` says."""
        await commands.ensure_netns(self.namespace)
        # Our addresses are static: no autoconfiguration from the router's advertisements,
        # and no duplicate detection holding them tentative while dnsmasq starts.
        await commands.ipv6_defaults(self.namespace, accept_ra=0, accept_dad=0)
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
        changed = daemons.write(self.hosts, hosts)
        changed |= daemons.write(self.options, options_file(network, dhcp_addresses))
        argv = self._argv(inner, network)
        restart = daemons.write(self.directory / "argv", "\n".join(argv) + "\n")
        # A removed host entry may still hold a lease (kept in memory only: --leasefile-ro)
        # that would keep its address from the next port given it; a restart forgets it.
        restart |= bool(before - set(hosts.splitlines()))
        pid = self.pid()
        if pid is not None and restart:
            await daemons.stop(pid, self.pid_file)
            pid = None
        if pid is None:
            await commands.start_daemon(self.namespace, *argv)
        elif changed:
            os.kill(pid, signal.SIGHUP)

    async def remove(self) -> None:
        """Stop dnsmasq and remove the namespace and files."""
        pid = self.pid()
        if pid is not None:
            await daemons.stop(pid, self.pid_file)
        await commands.delete_netns(self.namespace)
        shutil.rmtree(self.directory, ignore_errors=True)
