"""The linuxbridge data plane for real: two namespaces stand in for guests.

They are plugged the way the compute agent plugs taps (a device named tap<port>
with the port's MAC on the network's bridge), get their addresses from dnsmasq
(busybox udhcpc), ping each other, reach the external side through the router's
SNAT, are reached at a floating IP from the host until the ICMP rule is removed,
and everything is gone after the deletes. Then the agent reconciles after a
restart. Needs root, ip, nft, dnsmasq and busybox (under CI=true: fails, never skips).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from onestack.cloud import Cloud
from onestack.compute.drivers.base import Vif
from onestack.network.agent import NetworkAgent
from onestack.network.drivers.linuxbridge import bridges
from onestack.network.drivers.linuxbridge.metadata import sign
from onestack.network.vif import plug, unplug
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings
from tests.system.requirements import require

TOOLS = ("ip", "nft", "dnsmasq", "busybox", "ping", "curl")
EXTERNAL = "172.31.250"
INTERNAL = "10.251.5"
DHCP_SCRIPT = """#!/bin/sh
# udhcpc calls this with the lease in its environment.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "$router" dev "$interface"
    fi ;;
esac
"""


require(*TOOLS, what="the data-plane system test")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def wait(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``check`` until it holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def in_guest(guest: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", guest, *argv, check=check)


def pings(source: str | None, address: str, count: int = 1) -> bool:
    # A random ICMP identifier: namespaces number their pings alike, and a ping that reused
    # an earlier flow's identifier would pass the firewall as that flow's reply.
    ident = str(random.randint(1, 65535))
    argv = ("ping", "-e", ident, "-c", str(count), "-W", "1", address)
    result = in_guest(source, *argv, check=False) if source else sh(*argv, check=False)
    return result.returncode == 0


async def eventually(what: str, check: Callable[[], Awaitable[bool] | bool], timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def host_names() -> tuple[set[str], set[str]]:
    namespaces = set(sh("ip", "netns", "list").stdout.split())
    links = {
        line.split(":")[1].strip().split("@")[0]
        for line in sh("ip", "-o", "link", "show").stdout.splitlines()
    }
    return namespaces, links


class Api:
    def __init__(self, cloud: CloudClient, token: str):
        self.cloud = cloud
        self.token = token

    async def __call__(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.cloud.call(method, f"/network{path}", self.token, json=body)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[CloudClient]:
    settings = make_settings(tmp_path, port=8000, network=None)
    settings.services = ["identity", "network"]
    settings.network.driver = "linuxbridge"
    settings.network.scan_interval = 0.2
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    try:
        yield CloudClient(instance, client)
    finally:
        await client.aclose()
        unit: Any = instance.units["network"]
        agent = unit.agent
        await instance.stop()
        if agent is not None:
            await agent.teardown()


def network_unit(cloud: CloudClient) -> Any:
    return cloud.cloud.units["network"]


def plug_guest(guest: str, port: dict[str, Any], script: Path) -> None:
    """A namespace wired like a guest: veth tap<port> on the bridge, eth0 with the port's MAC."""
    tap = bridges.tap_name(port["id"])
    sh("ip", "netns", "add", guest)
    sh("ip", "link", "add", tap, "type", "veth", "peer", "name", f"g{tap[3:]}")
    sh("ip", "link", "set", f"g{tap[3:]}", "netns", guest)
    in_guest(guest, "ip", "link", "set", f"g{tap[3:]}", "name", "eth0")
    in_guest(guest, "ip", "link", "set", "eth0", "address", port["mac_address"], "up")
    in_guest(guest, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "set", tap, "master", port["binding:vif_details"]["bridge_name"], "up")
    in_guest(
        guest,
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "10",
        "-T",
        "1",
        "-O",
        "staticroutes",
        "-s",
        str(script),
    )


async def check_vif_plugging(api: Api, network_id: str, host: str) -> None:
    """vif.plug (what the qemu driver calls) makes the tap the agent reports ACTIVE."""
    port = (
        await api(
            "POST",
            "/v2.0/ports",
            {
                "port": {
                    "network_id": network_id,
                    "binding:host_id": host,
                    "device_owner": "compute:nova",
                    "device_id": str(uuid.uuid4()),
                }
            },
            201,
        )
    )["port"]
    vif = Vif(
        port_id=port["id"],
        mac_address=port["mac_address"],
        network_id=network_id,
        vif_type=port["binding:vif_type"],
        details=port["binding:vif_details"],
        mtu=1500,
    )

    async def status(wanted: str) -> bool:
        shown = await api("GET", f"/v2.0/ports/{port['id']}")
        return bool(shown["port"]["status"] == wanted)

    await plug(vif)
    await plug(vif)  # idempotent
    masters = sh("ip", "-o", "link", "show", "master", vif.details["bridge_name"]).stdout
    assert bridges.tap_name(port["id"]) in masters
    await eventually("the plugged tap ACTIVE", lambda: status("ACTIVE"))
    await unplug(vif)
    await eventually("the unplugged port DOWN", lambda: status("DOWN"))
    await api("DELETE", f"/v2.0/ports/{port['id']}", status=204)


def readdress(guest: str, old: str, new: str) -> None:
    """Move the guest from ``old`` to ``new`` (same subnet), keeping its default route."""
    in_guest(guest, "ip", "addr", "del", f"{old}/24", "dev", "eth0")
    in_guest(guest, "ip", "addr", "add", f"{new}/24", "dev", "eth0")
    in_guest(guest, "ip", "route", "replace", "default", "via", f"{INTERNAL}.1")


async def check_metadata(unit: Any, guest: str, port: dict[str, Any]) -> None:
    """169.254.169.254 in the guest reaches compute's metadata URL with the signed headers."""
    seen: dict[str, Any] = {}

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen["path"] = head.split(" ")[1]
        seen.update(
            (k.lower(), v.strip()) for k, _, v in (h.partition(":") for h in head.split("\r\n")[1:])
        )
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"a": 1}')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()

    async def metadata_url() -> str:
        return f"http://{address[0]}:{address[1]}/compute/metadata"

    unit.agent.metadata.upstream = metadata_url
    try:
        fetch = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            guest,
            "curl",
            "-sS",
            "-m",
            "5",
            "http://169.254.169.254/openstack/latest/meta_data.json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await fetch.communicate()
    finally:
        server.close()
    assert out == b'{"a": 1}', (fetch.returncode, err, seen)
    assert seen["path"] == "/compute/metadata/openstack/latest/meta_data.json"
    assert seen["x-instance-id"] == port["device_id"]
    assert seen["x-tenant-id"] == port["project_id"]
    assert seen["x-forwarded-for"] == port["fixed_ips"][0]["ip_address"]
    assert seen["x-instance-id-signature"] == sign(unit.agent.metadata.secret, port["device_id"])


async def test_two_guests_dhcp_ping_snat_floating_ip_security_groups(
    cloud: CloudClient, tmp_path: Path
) -> None:
    started = time.monotonic()
    api = Api(cloud, await cloud.token())
    unit = network_unit(cloud)
    host = unit.agent.host
    script = tmp_path / "udhcpc.sh"
    script.write_text(DHCP_SCRIPT)
    script.chmod(0o755)
    guests = [f"osguest-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        agents = (await api("GET", "/v2.0/agents"))["agents"]
        assert [a["alive"] for a in agents if a["host"] == host] == [True]
        assert "vxlan" in agents[0]["configurations"]["features"]

        public = (
            await api(
                "POST",
                "/v2.0/networks",
                {
                    "network": {
                        "name": "public",
                        "router:external": True,
                        "provider:network_type": "flat",
                        "provider:physical_network": "public",
                    }
                },
                201,
            )
        )["network"]
        await api(
            "POST",
            "/v2.0/subnets",
            {
                "subnet": {
                    "network_id": public["id"],
                    "cidr": f"{EXTERNAL}.0/24",
                    "ip_version": 4,
                    "enable_dhcp": False,
                    "gateway_ip": f"{EXTERNAL}.1",
                    "allocation_pools": [{"start": f"{EXTERNAL}.10", "end": f"{EXTERNAL}.50"}],
                }
            },
            201,
        )
        private = (await api("POST", "/v2.0/networks", {"network": {"name": "intnet"}}, 201))[
            "network"
        ]
        subnet = (
            await api(
                "POST",
                "/v2.0/subnets",
                {
                    "subnet": {
                        "network_id": private["id"],
                        "cidr": f"{INTERNAL}.0/24",
                        "ip_version": 4,
                    }
                },
                201,
            )
        )["subnet"]
        router = (
            await api(
                "POST",
                "/v2.0/routers",
                {"router": {"name": "r1", "external_gateway_info": {"network_id": public["id"]}}},
                201,
            )
        )["router"]
        await api(
            "PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]}
        )
        ports = [
            (
                await api(
                    "POST",
                    "/v2.0/ports",
                    {
                        "port": {
                            "network_id": private["id"],
                            "name": f"p{i}",
                            "binding:host_id": host,
                            "device_owner": "compute:nova",
                            "device_id": str(uuid.uuid4()),
                        }
                    },
                    201,
                )
            )["port"]
            for i in (1, 2)
        ]
        assert ports[0]["binding:vif_type"] == "bridge"
        assert ports[0]["status"] == "DOWN"
        await eventually("the agent to build the network", unit.agent.synced.wait)

        for guest, port in zip(guests, ports, strict=True):
            plug_guest(guest, port, script)
        addresses = [p["fixed_ips"][0]["ip_address"] for p in ports]
        for guest, address in zip(guests, addresses, strict=True):
            shown = in_guest(guest, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
            assert f"{address}/24" in shown, shown

        async def active() -> bool:
            found = [(await api("GET", f"/v2.0/ports/{p['id']}"))["port"] for p in ports]
            return all(p["status"] == "ACTIVE" for p in found)

        await eventually("both ports ACTIVE", active)
        await check_vif_plugging(api, private["id"], host)
        assert pings(guests[0], addresses[1]) and pings(guests[1], addresses[0])
        # The external side: the host's uplink holds the external gateway; the guest's
        # traffic leaves through the router's SNAT (the host has no route back to it).
        assert pings(guests[0], f"{EXTERNAL}.1")
        await check_metadata(unit, guests[0], ports[0])

        fip = (
            await api(
                "POST",
                "/v2.0/floatingips",
                {"floatingip": {"floating_network_id": public["id"], "port_id": ports[0]["id"]}},
                201,
            )
        )["floatingip"]
        address = fip["floating_ip_address"]
        await unit.agent.synced.wait()
        await asyncio.sleep(0.5)
        assert not pings(None, address), "ingress from outside the group is denied by default"
        groups = (await api("GET", "/v2.0/security-groups?name=default"))["security_groups"]
        rule = (
            await api(
                "POST",
                "/v2.0/security-group-rules",
                {
                    "security_group_rule": {
                        "security_group_id": groups[0]["id"],
                        "direction": "ingress",
                        "protocol": "icmp",
                        "ethertype": "IPv4",
                    }
                },
                201,
            )
        )["security_group_rule"]
        await eventually("the floating IP answering", lambda: pings(None, address))
        await api("DELETE", f"/v2.0/security-group-rules/{rule['id']}", status=204)
        await eventually("the floating IP no longer answering", lambda: not pings(None, address))
        assert pings(guests[1], addresses[0]), "members of the group still reach each other"

        # Anti-spoofing: a guest using an address that is not its own is cut off, until
        # the port's allowed_address_pairs include it.
        spoofed = f"{INTERNAL}.200"
        readdress(guests[0], addresses[0], spoofed)
        assert not pings(guests[0], addresses[1])
        await api(
            "PUT",
            f"/v2.0/ports/{ports[0]['id']}",
            {"port": {"allowed_address_pairs": [{"ip_address": spoofed}]}},
        )
        await eventually("the allowed address pair to pass", lambda: pings(guests[0], addresses[1]))
        readdress(guests[0], spoofed, addresses[0])

        # Static routes land in the router's namespace.
        await api(
            "PUT",
            f"/v2.0/routers/{router['id']}",
            {"router": {"routes": [{"destination": "192.0.2.0/24", "nexthop": addresses[1]}]}},
        )

        def routed() -> bool:
            table = sh("ip", "-n", f"qrouter-{router['id']}", "route").stdout
            return f"192.0.2.0/24 via {addresses[1]}" in table

        await eventually("the static route in the router", routed)

        # Reconcile: the agent is restarted after a router namespace vanished and while a
        # network was deleted behind its back.
        await unit.agent.stop()
        sh("ip", "netns", "del", f"qrouter-{router['id']}")
        spare = (await api("POST", "/v2.0/networks", {"network": {"name": "spare"}}, 201))[
            "network"
        ]
        await api(
            "POST",
            "/v2.0/subnets",
            {"subnet": {"network_id": spare["id"], "cidr": "10.251.6.0/24", "ip_version": 4}},
            201,
        )
        unit.agent = NetworkAgent(unit.settings, unit.bus, client=unit.client)
        await unit.agent.start()
        await asyncio.wait_for(unit.agent.synced.wait(), 30)
        namespaces, links = host_names()
        assert f"qdhcp-{spare['id']}" in namespaces
        await api("DELETE", f"/v2.0/networks/{spare['id']}", status=204)
        await unit.agent.stop()
        unit.agent = NetworkAgent(unit.settings, unit.bus, client=unit.client)
        await unit.agent.start()
        await asyncio.wait_for(unit.agent.synced.wait(), 30)
        namespaces, links = host_names()
        assert f"qrouter-{router['id']}" in namespaces
        assert f"qdhcp-{spare['id']}" not in namespaces
        assert bridges.bridge_name(spare["id"]) not in links
        await eventually(
            "the floating IP pings after the restart", lambda: pings(guests[0], f"{EXTERNAL}.1")
        )

        # Deletes leave nothing behind.
        for guest, port in zip(guests, ports, strict=True):
            sh("ip", "netns", "del", guest)
            sh("ip", "link", "del", bridges.tap_name(port["id"]), check=False)
        await api("DELETE", f"/v2.0/floatingips/{fip['id']}", status=204)
        for port in ports:
            await api("DELETE", f"/v2.0/ports/{port['id']}", status=204)
        await api(
            "PUT",
            f"/v2.0/routers/{router['id']}/remove_router_interface",
            {"subnet_id": subnet["id"]},
        )
        await api("DELETE", f"/v2.0/routers/{router['id']}", status=204)
        await api("DELETE", f"/v2.0/networks/{private['id']}", status=204)
        await api("DELETE", f"/v2.0/networks/{public['id']}", status=204)

        def clean() -> bool:
            namespaces, links = host_names()
            ids = (router["id"], private["id"], public["id"])
            return not any(i in n for i in ids for n in namespaces) and not any(
                name in links
                for name in (
                    bridges.bridge_name(private["id"]),
                    bridges.bridge_name(public["id"]),
                    *bridges.uplink_names(public["id"]),
                )
            )

        await eventually("everything gone after the deletes", clean)
        await eventually(
            "the security-group tables gone",
            lambda: unit.agent.tag not in sh("nft", "list", "tables").stdout,
        )
        dnsmasq = sh("pgrep", "-af", "dnsmasq", check=False).stdout
        assert private["id"] not in dnsmasq
        assert time.monotonic() - started < 120
    finally:
        for guest in guests:
            sh("ip", "netns", "del", guest, check=False)


async def test_flat_network_on_a_mapped_host_interface(cloud: CloudClient) -> None:
    api = Api(cloud, await cloud.token())
    unit = network_unit(cloud)
    physical = f"osphys{uuid.uuid4().hex[:6]}"
    sh("ip", "link", "add", physical, "type", "veth", "peer", "name", f"{physical}p")
    unit.agent.settings.network.physical_interfaces = {"physnet-test": physical}
    try:
        network = (
            await api(
                "POST",
                "/v2.0/networks",
                {
                    "network": {
                        "name": "provider",
                        "provider:network_type": "flat",
                        "provider:physical_network": "physnet-test",
                    }
                },
                201,
            )
        )["network"]
        await api(
            "POST",
            "/v2.0/subnets",
            {"subnet": {"network_id": network["id"], "cidr": "10.251.7.0/24", "ip_version": 4}},
            201,
        )

        def on_bridge() -> bool:
            shown = sh("ip", "-o", "link", "show", physical).stdout
            return f"master {bridges.bridge_name(network['id'])}" in shown

        await eventually("the host interface on the network's bridge", on_bridge)
        await api("DELETE", f"/v2.0/networks/{network['id']}", status=204)

        def released() -> bool:
            shown = sh("ip", "-o", "link", "show", physical).stdout
            return "master" not in shown and bridges.bridge_name(network["id"]) not in (
                sh("ip", "-o", "link").stdout
            )

        await eventually("the bridge gone and the interface released", released)
    finally:
        sh("ip", "link", "del", physical, check=False)
