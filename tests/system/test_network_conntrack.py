"""Removing a security group rule cuts the connections it let in, at once.

``onestack up`` (linuxbridge, its own agent) and the real ``openstack`` CLI: two
namespaces stand in for guests on one network, one in a group allowing ICMP in; the
other pings it continuously (every 0.2 s), and the replies stop within two seconds of
``openstack security group rule delete``, though the ping's flow was established (the
agent deletes the tracked connections of the ports whose filtering narrowed). Then the
same when the guest's group is taken off its port, and for the host's ping of the guest's
floating IP when the floating IP is disassociated (the router forgets its translations).
Needs root, ip, nft, ping and conntrack (under CI=true: fails, never skips).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onestack.network.drivers.linuxbridge import bridges
from tests.acceptance.conftest import ADMIN_PASSWORD, Deployment, Process, free_port
from tests.system.requirements import require
from tests.system.test_network_dataplane import TOOLS, sh, wait

SUBNET = "10.253.9"
EXTERNAL = "172.31.252"
CUT_WITHIN = 2.0

require(*TOOLS, "conntrack", what="the conntrack test")


class Ping:
    """``ping -i 0.2`` from a namespace (or the host), noting when each reply came."""

    def __init__(self, netns: str | None, address: str):
        self.replies: list[float] = []
        inside = ["ip", "netns", "exec", netns] if netns else []
        self.popen = subprocess.Popen(
            [*inside, "ping", "-n", "-i", "0.2", address], stdout=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if "bytes from" in line:
                self.replies.append(time.monotonic())

    def flowing(self) -> bool:
        """Replies keep coming (three in the last second)."""
        return len([t for t in self.replies if t > time.monotonic() - 1]) >= 3

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[tuple[Deployment, str]]:
    """A cloud of identity and network with the linuxbridge data plane; its agent's host."""
    host = f"ct-{uuid.uuid4().hex[:6]}"
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(tmp_path / "cloud"),
         "--admin-password", ADMIN_PASSWORD],
        tmp_path / "up.out",
        {"ONESTACK_SERVICES": '["identity", "network"]', "ONESTACK_NETWORK__DRIVER": "linuxbridge",
         "ONESTACK_NETWORK__HOST": host, "ONESTACK_NETWORK__SCAN_INTERVAL": "0.2"},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    try:
        process.wait_ready(auth_url)
        yield Deployment("conntrack", auth_url, [process]), host
    finally:
        assert process.stop() == 0, process.log.read_text()[-3000:]


def plug(guest: str, port: dict[str, Any]) -> str:
    """A namespace wired like a guest on the port (static address); the address."""
    tap = bridges.tap_name(port["id"])
    inner = f"g{tap[3:]}"
    address = port["fixed_ips"][0]["ip_address"]
    sh("ip", "netns", "add", guest)
    sh("ip", "link", "add", tap, "type", "veth", "peer", "name", inner, "netns", guest)
    sh("ip", "-n", guest, "link", "set", inner, "address", port["mac_address"], "up")
    sh("ip", "-n", guest, "addr", "add", f"{address}/24", "dev", inner)
    sh("ip", "-n", guest, "route", "add", "default", "via", f"{SUBNET}.1")
    sh("ip", "link", "set", tap, "master", bridges.bridge_name(port["network_id"]), "up")
    return address


def cut_soon(ping: Ping, narrow: Callable[[], None]) -> float:
    """Narrow the filtering while ``ping`` flows; how long its replies went on after."""
    wait("the ping to flow", ping.flowing)
    narrow()
    narrowed = time.monotonic()
    time.sleep(CUT_WITHIN + 1.5)
    assert not ping.flowing(), "the established flow still passes"
    return max(ping.replies) - narrowed


def test_established_flows_stop_when_their_rule_goes(cloud: tuple[Deployment, str]) -> None:
    deployment, host = cloud

    def openstack(command: str, *args: str, check: bool = True) -> Any:
        return deployment.openstack(*command.split(), *args, check=check)

    def show(command: str, *args: str) -> Any:
        return deployment.json(*command.split(), *args)

    tag = uuid.uuid4().hex[:6]
    guests = {name: f"ct{name}-{tag}" for name in ("target", "source")}
    made: list[str] = []  # how to delete what was made, in the order it was made
    pings: list[Ping] = []
    try:
        network = show("network", "create", f"ct-net-{tag}")
        made.append(f"network delete {network['id']}")
        show("subnet", "create", "--network", network["id"], "--subnet-range",
             f"{SUBNET}.0/24", "--no-dhcp", f"ct-sub-{tag}")  # fmt: skip
        group = show("security group", "create", f"ct-sg-{tag}")
        made.append(f"security group delete {group['id']}")
        rule = show("security group rule", "create", "--ingress", "--protocol", "icmp",
                    group["id"])  # fmt: skip
        ports = {}
        for name, groups in (("target", [group["id"]]), ("source", ["default"])):
            options = [arg for g in groups for arg in ("--security-group", g)]
            ports[name] = show(
                "port", "create", "--network", network["id"], "--host", host,
                "--device-owner", "compute:nova", *options, f"ct-{name}-{tag}",
            )  # fmt: skip
            made.append(f"port delete {ports[name]['id']}")
        addresses = {name: plug(guests[name], port) for name, port in ports.items()}

        def active() -> bool:
            return all(show("port show", p["id"])["status"] == "ACTIVE" for p in ports.values())

        wait("both ports ACTIVE", active)

        pings.append(Ping(guests["source"], addresses["target"]))
        lasted = cut_soon(pings[-1], lambda: openstack("security group rule delete", rule["id"]))
        assert lasted < CUT_WITHIN, f"replies went on {lasted:.2f} s after the rule delete"

        # The rule back; then the group taken off the port (no group: nothing comes in).
        openstack("security group rule create", "--ingress", "--protocol", "icmp", group["id"])
        pings.append(Ping(guests["source"], addresses["target"]))
        lasted = cut_soon(
            pings[-1], lambda: openstack("port set", "--no-security-group", ports["target"]["id"])
        )
        assert lasted < CUT_WITHIN, f"replies went on {lasted:.2f} s after the group went"

        # The group back, a floating IP pinged from the host; then it is disassociated:
        # the router forgets its translations, the ping stops.
        openstack("port set", "--security-group", group["id"], ports["target"]["id"])
        public = show("network create", "--external", "--provider-network-type", "flat",
                      "--provider-physical-network", "public", f"ct-public-{tag}")  # fmt: skip
        made.append(f"network delete {public['id']}")
        show("subnet create", "--network", public["id"], "--subnet-range", f"{EXTERNAL}.0/24",
             "--no-dhcp", f"ct-public-sub-{tag}")  # fmt: skip
        router = show("router create", f"ct-router-{tag}")
        made.append(f"router delete {router['id']}")
        openstack("router set", "--external-gateway", public["id"], router["id"])
        openstack("router add subnet", router["id"], f"ct-sub-{tag}")
        made.append(f"router remove subnet {router['id']} ct-sub-{tag}")
        fip = show("floating ip create", "--port", ports["target"]["id"], public["id"])
        made.append(f"floating ip delete {fip['id']}")
        pings.append(Ping(None, fip["floating_ip_address"]))
        lasted = cut_soon(pings[-1], lambda: openstack("floating ip unset", "--port", fip["id"]))
        assert lasted < CUT_WITHIN, f"replies went on {lasted:.2f} s after the disassociation"
    finally:
        for ping in pings:
            ping.stop()
        for guest in guests.values():
            sh("ip", "netns", "del", guest, check=False)
        for command in reversed(made):
            openstack(command, check=False)
    bridge = bridges.bridge_name(network["id"])
    wait("the bridge gone", lambda: bridge not in sh("ip", "-o", "link", "show").stdout)
