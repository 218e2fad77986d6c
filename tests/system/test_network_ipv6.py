"""IPv6 on the linuxbridge data plane, driven by the real ``openstack`` CLI against ``onestack up``.

Three namespaces stand in for guests, plugged the way the compute agent plugs taps.
Two share a dual-stack network with a SLAAC subnet and a DHCPv6-stateful one, both on
a router: the kernel makes its SLAAC address from the router's advertisements (radvd)
and dhclient asks the network's dnsmasq for the stateful one (with its DNS server);
both must be the addresses the API gave the port. The third is on a second network, a
DHCPv6-stateless subnet on the same router: SLAAC address, DNS server in the
advertisement (RDNSS) and by DHCPv6 information request. They ping6 each other, within
the network and through the router, and the external network's IPv6 gateway (routed,
no NAT); the ICMPv6 rule's removal cuts the routed guest off; an IPv6 address that is
not the guest's own goes nowhere, nor does a router advertisement a guest sends.
Everything is gone after the deletes. Needs root, ip, nft, dnsmasq, radvd, dhclient,
rdisc6 and ping (under CI=true: fails, never skips).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onestack.network.drivers.linuxbridge import bridges
from tests.acceptance.conftest import ADMIN_PASSWORD, Deployment, Process, free_port
from tests.system.requirements import require
from tests.system.test_network_agent_process import wait as eventually
from tests.system.test_network_dataplane import in_guest, sh

TOOLS = ("ip", "nft", "dnsmasq", "radvd", "dhclient", "rdisc6", "ping")
# Unique local prefixes, random so that concurrent runs on one host do not collide.
PREFIX = f"fd{random.randint(0, 255):02x}:{random.randint(0, 0xFFFF):x}"
DHCLIENT_SCRIPT = """#!/bin/sh
# dhclient -6 calls this with the lease in its environment (no prefix length in DHCPv6:
# the router's advertisement says the prefix is on-link). What it got goes to $0.log.
case "$reason" in
  BOUND6|RENEW6|REBIND6|REBOOT6)
    ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" ;;
esac
echo "$reason $new_ip6_address $new_dhcp6_name_servers" >> "$0.log"
"""


require(*TOOLS, what="the IPv6 data-plane test")


def pings6(guest: str, address: str, source: str | None = None) -> bool:
    # A random identifier: an earlier flow's conntrack entry must not let the ping through.
    argv = ["ping", "-6", "-e", str(random.randint(1, 65535)), "-c", "1", "-W", "1"]
    argv += ["-I", source] if source else []
    return in_guest(guest, *argv, address, check=False).returncode == 0


def global_addresses(guest: str) -> set[str]:
    """The guest's global IPv6 addresses that finished duplicate address detection."""
    shown = in_guest(guest, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
    return {
        line.split()[3].split("/")[0]
        for line in shown.stdout.splitlines()
        if "tentative" not in line
    }


def link_local_ready(guest: str) -> bool:
    shown = in_guest(guest, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
    return "fe80::" in shown.stdout and "tentative" not in shown.stdout


def namespace_pids(name: str) -> list[str]:
    return sh("ip", "netns", "pids", name, check=False).stdout.split()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp("ipv6cloud")
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD],
        data_dir / "onestack.out",
        env={"ONESTACK_SERVICES": '["identity", "network"]'},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    deployment = Deployment("ipv6-cloud", auth_url, [process])
    deployment.extra_env = {"data_dir": str(data_dir)}
    try:
        process.wait_ready(auth_url)
        yield deployment
        _delete_everything(deployment)
    finally:
        assert process.stop() == 0, process.log.read_text()[-2000:]


def _delete_everything(cloud: Deployment) -> None:
    """What a failed run left, deleted through the API; the agent then removes its data plane."""
    for port in cloud.json("port", "list", "--device-owner", "compute:nova"):
        cloud.openstack("port", "delete", port["ID"])
    for router in cloud.json("router", "list"):
        for port in cloud.json("port", "list", "--router", router["ID"]):
            for fixed in port["Fixed IP Addresses"]:
                cloud.openstack(
                    "router", "remove", "subnet", router["ID"], fixed["subnet_id"], check=False
                )
        cloud.openstack("router", "unset", "--external-gateway", router["ID"], check=False)
        cloud.openstack("router", "delete", router["ID"])
    networks = [network["ID"] for network in cloud.json("network", "list")]
    for network in networks:
        cloud.openstack("network", "delete", network)
    eventually(
        "the data plane of the deleted networks gone",
        lambda: not any(n in sh("ip", "netns", "list").stdout for n in networks),
    )


class Guests:
    """Namespaces plugged like guests, with what they run; all removed by :meth:`remove`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.names: list[str] = []

    def plug(self, port: dict[str, Any]) -> str:
        """A namespace wired like a guest: veth tap<port> on the bridge, eth0 with the MAC."""
        guest = f"osguest6-{uuid.uuid4().hex[:6]}"
        self.names.append(guest)
        tap = bridges.tap_name(port["id"])
        sh("ip", "netns", "add", guest)
        sh("ip", "link", "add", tap, "type", "veth", "peer", "name", f"g{tap[3:]}")
        sh("ip", "link", "set", f"g{tap[3:]}", "netns", guest)
        in_guest(guest, "ip", "link", "set", f"g{tap[3:]}", "name", "eth0")
        in_guest(guest, "ip", "link", "set", "eth0", "address", port["mac_address"])
        in_guest(guest, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "set", tap, "master", bridges.bridge_name(port["network_id"]), "up")
        # Up last: the kernel solicits the router's advertisement as the link comes up.
        in_guest(guest, "ip", "link", "set", "eth0", "up")
        return guest

    def dhcpv6(self, guest: str, stateless: bool = False) -> str:
        """Ask DHCPv6 for an address, or only options; what dhclient (left to renew) got."""
        script = self.directory / f"{guest}.sh"
        script.write_text(DHCLIENT_SCRIPT)
        script.chmod(0o755)
        leases, pid_file = self.directory / f"{guest}.leases", self.directory / f"{guest}.pid"
        # dhclient binds to the link-local address: wait until it is no longer tentative.
        eventually("the guest's link-local address", lambda: link_local_ready(guest))
        in_guest(
            guest, "dhclient", "-6", *(["-S"] if stateless else []), "-1", "-cf", "/dev/null",
            "-sf", str(script), "-lf", str(leases), "-pf", str(pid_file), "eth0",
        )  # fmt: skip
        log = Path(f"{script}.log")
        eventually("dhclient's answer", log.exists)
        return log.read_text()

    def remove(self) -> None:
        for guest in self.names:
            pid_file = self.directory / f"{guest}.pid"
            if pid_file.exists():
                sh("kill", pid_file.read_text().strip(), check=False)
            sh("ip", "netns", "del", guest, check=False)


def test_dual_stack_slaac_and_dhcpv6_guests_route_and_filter(
    cloud: Deployment, tmp_path: Path
) -> None:
    started = time.monotonic()
    guests = Guests(tmp_path)
    host_route = f"{PREFIX}:1::/64"
    try:
        _scenario(cloud, guests, host_route)
    finally:
        guests.remove()
        sh("ip", "-6", "route", "del", host_route, check=False)
    assert time.monotonic() - started < 300


def _scenario(cloud: Deployment, guests: Guests, host_route: str) -> None:
    [agent] = cloud.json("network", "agent", "list")
    host = agent["Host"]
    v6 = ("--ip-version", "6")
    net = cloud.json("network", "create", "v6net")
    v4_range = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"
    cloud.json("subnet", "create", "--network", "v6net", "--subnet-range", v4_range, "v4sub")
    slaac, stateful = (
        cloud.json(
            "subnet", "create", "--network", "v6net", *v6, "--subnet-range",
            f"{PREFIX}:{index}::/64", "--ipv6-ra-mode", mode, "--ipv6-address-mode", mode,
            "--dns-nameserver", f"{PREFIX}:{index}::53", name,
        )
        for index, mode, name in ((1, "slaac", "slaacsub"), (2, "dhcpv6-stateful", "dhcp6sub"))
    )  # fmt: skip
    cloud.json("network", "create", "v6net2")
    stateless = "dhcpv6-stateless"
    cloud.json(
        "subnet", "create", "--network", "v6net2", *v6, "--subnet-range", f"{PREFIX}:3::/64",
        "--ipv6-ra-mode", stateless, "--ipv6-address-mode", stateless,
        "--dns-nameserver", f"{PREFIX}:3::53", "statelesssub",
    )  # fmt: skip
    external = cloud.json(
        "network", "create", "--external", "--provider-network-type", "flat",
        "--provider-physical-network", "public", "ext6",
    )  # fmt: skip
    cloud.json(
        "subnet", "create", "--network", "ext6", *v6, "--no-dhcp", "--subnet-range",
        f"{PREFIX}:ff::/64", "--gateway", f"{PREFIX}:ff::1", "ext6sub",
    )  # fmt: skip
    router = cloud.json("router", "create", "r6")
    cloud.openstack("router", "set", "--external-gateway", "ext6", "r6")
    for subnet in ("slaacsub", "dhcp6sub", "statelesssub"):
        cloud.openstack("router", "add", "subnet", "r6", subnet)
    cloud.json("security", "group", "create", "pingable")
    rule = cloud.json(
        "security", "group", "rule", "create", "--ingress", "--ethertype", "IPv6",
        "--protocol", "ipv6-icmp", "--remote-ip", f"{PREFIX}:3::/64", "pingable",
    )  # fmt: skip
    cloud.json("security", "group", "create", "outsider")

    def port(network: str, name: str, *groups: str) -> dict[str, Any]:
        chosen = [arg for group in groups for arg in ("--security-group", group)]
        found: dict[str, Any] = cloud.json(
            "port", "create", "--network", network, "--host", host, "--device-owner",
            "compute:nova", "--device", str(uuid.uuid4()), *chosen, name,
        )  # fmt: skip
        return found

    a, b = port("v6net", "a", "default", "pingable"), port("v6net", "b", "default", "pingable")
    c = port("v6net2", "c", "outsider")

    def address(port: dict[str, Any], subnet: dict[str, Any]) -> str:
        [found] = [ip["ip_address"] for ip in port["fixed_ips"] if ip["subnet_id"] == subnet["id"]]
        return str(found)

    assert len(a["fixed_ips"]) == 3, a["fixed_ips"]  # IPv4, SLAAC and DHCPv6
    qrouter = f"qrouter-{router['id']}"
    eventually("radvd in the router's namespace", lambda: bool(namespace_pids(qrouter)))
    eventually("the DHCP namespace", lambda: bool(namespace_pids(f"qdhcp-{net['id']}")))

    ga, gb, gc = guests.plug(a), guests.plug(b), guests.plug(c)
    # SLAAC: the kernel's EUI-64 address from the advertised prefix is the port's.
    a_slaac, c_slaac = address(a, slaac), c["fixed_ips"][0]["ip_address"]
    for guest, held in ((ga, a), (gb, b)):
        own_slaac = address(held, slaac)
        eventually("the SLAAC address", lambda g=guest, o=own_slaac: o in global_addresses(g))
        got = guests.dhcpv6(guest)
        assert f"BOUND6 {address(held, stateful)} {PREFIX}:2::53" in got, got
        # Exactly the port's addresses: none made from the stateful prefix (not autonomous).
        wanted = {own_slaac, address(held, stateful)}
        eventually("the DHCPv6 address", lambda g=guest, w=wanted: global_addresses(g) == w)
    eventually("c's SLAAC address", lambda: global_addresses(gc) == {c_slaac})
    # Stateless: the advertisement says "other configuration" and carries the DNS server
    # (RDNSS); DHCPv6 answers c's information request with the subnet's DNS server.
    shown = in_guest(gc, "rdisc6", "-1", "-r", "3", "-w", "2000", "eth0").stdout
    advertised = " ".join(shown.split())
    assert "Stateful other conf. : Yes" in advertised, shown
    assert f"Recursive DNS server : {PREFIX}:3::53" in advertised, shown
    got = guests.dhcpv6(gc, stateless=True)
    assert got.split()[1:] == [f"{PREFIX}:3::53"], got  # options, no address

    eventually("a and b ping6 each other", lambda: pings6(ga, address(b, slaac)))
    assert pings6(gb, address(a, stateful)) and pings6(ga, address(b, stateful))
    eventually("c reaches a through the router", lambda: pings6(gc, a_slaac))
    assert not pings6(ga, c_slaac), "c's group allows no ingress: IPv6 is denied by default"

    # The external network's IPv6 subnet: routed without NAT, so the host (standing in for
    # the upstream router) needs a route back to the internal prefix.
    shown = cloud.json("router", "show", "r6")["external_gateway_info"]
    [gateway] = [ip["ip_address"] for ip in shown["external_fixed_ips"] if ":" in ip["ip_address"]]
    sh("ip", "-6", "route", "replace", host_route, "via", gateway)
    eventually("the external IPv6 gateway", lambda: pings6(ga, f"{PREFIX}:ff::1", a_slaac))
    assert bridges.bridge_name(external["id"])

    # The ICMPv6 rule (remote prefix: c's subnet) goes: c is cut off; a and b, in the
    # default group together, still reach each other.
    cloud.openstack("security", "group", "rule", "delete", rule["id"])
    eventually("c cut off from a", lambda: not pings6(gc, a_slaac))
    assert pings6(gb, a_slaac)

    # Anti-spoofing: an address that is not the port's goes nowhere; the port's still does.
    spoofed = f"{PREFIX}:1::bad"
    in_guest(ga, "ip", "-6", "addr", "add", f"{spoofed}/64", "dev", "eth0", "nodad")
    assert not pings6(ga, address(b, slaac), spoofed)
    assert pings6(ga, address(b, slaac), a_slaac)
    in_guest(ga, "ip", "-6", "addr", "del", f"{spoofed}/64", "dev", "eth0")

    # A rogue router advertisement from b never reaches a.
    rogue = guests.directory / "rogue-radvd.conf"
    rogue.write_text(
        "interface eth0 { AdvSendAdvert on; MinRtrAdvInterval 3; MaxRtrAdvInterval 4;\n"
        f"  prefix {PREFIX}:9::/64 {{ AdvOnLink on; AdvAutonomous on; }}; }};\n"
    )
    rogue_pid = guests.directory / "rogue-radvd.pid"
    in_guest(gb, "radvd", "-C", str(rogue), "-p", str(rogue_pid), "-m", "stderr")
    try:
        time.sleep(5)
        assert not any(a.startswith(f"{PREFIX}:9:") for a in global_addresses(ga))
    finally:
        sh("kill", rogue_pid.read_text().strip(), check=False)

    # Deletes leave nothing behind: namespaces, bridges, radvd, dnsmasq.
    guests.remove()
    for name in ("a", "b", "c"):
        cloud.openstack("port", "delete", name)
    for subnet in ("slaacsub", "dhcp6sub", "statelesssub"):
        cloud.openstack("router", "remove", "subnet", "r6", subnet)
    cloud.openstack("router", "unset", "--external-gateway", "r6")
    cloud.openstack("router", "delete", "r6")
    networks = [cloud.json("network", "show", n)["id"] for n in ("v6net", "v6net2", "ext6")]
    for network in networks:
        cloud.openstack("network", "delete", network)

    def clean() -> bool:
        namespaces = sh("ip", "netns", "list").stdout
        links = sh("ip", "-o", "link").stdout
        return not any(i in namespaces for i in [router["id"], *networks]) and not any(
            bridges.bridge_name(n) in links for n in networks
        )

    eventually("everything gone after the deletes", clean)
    processes = sh("pgrep", "-af", "radvd|dnsmasq", check=False).stdout
    assert cloud.extra_env["data_dir"] not in processes, processes
