"""A vxlan network between two hosts, simulated on this machine.

Two "host" network namespaces joined by a veth pair (192.0.2.1/24, 192.0.2.2/24) each
run ``onestack agent network`` (``ip netns exec``) over RabbitMQ, beside a cloud whose API
process runs no agent; a thread forwards each host's 127.0.0.1:5672 to the broker. Each
host gets a "guest" namespace plugged into a port bound to it; the guests ping each other
across the tunnel (each host floods the network only to hosts with guests on it), and
deleting the network removes the VXLAN devices on both hosts.
Needs root, ip, nft, dnsmasq, ping and a kernel with VXLAN (under CI=true: fails).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from onestack.network.drivers.linuxbridge import firewall
from onestack.network.drivers.linuxbridge.features import detect
from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Process, free_port, issue_token
from tests.backends import isolated_amqp_url
from tests.system.requirements import require
from tests.system.test_network_dataplane import TOOLS, sh, wait

CLONE_NEWNET = 0x40000000
HOSTS = {"vx-host-1": "192.0.2.1", "vx-host-2": "192.0.2.2"}

require(*TOOLS, what="the vxlan test")
require(what="the vxlan test", lacking=[] if detect().vxlan else ["VXLAN in the kernel"])


def links(netns: str) -> dict[str, dict[str, Any]]:
    shown = json.loads(sh("ip", "-n", netns, "-json", "-details", "link", "show").stdout)
    return {link["ifname"]: link for link in shown}


def flood_list(netns: str, device: str) -> set[str]:
    shown = sh("bridge", "-n", netns, "-json", "fdb", "show", "dev", device, check=False)
    entries = json.loads(shown.stdout) if shown.stdout.strip() else []
    return {e["dst"] for e in entries if e.get("mac") == "00:00:00:00:00:00" and "dst" in e}


def forward_into(netns: str, port: int, stop: threading.Event) -> None:
    """Listen on 127.0.0.1:``port`` inside ``netns``; relay to 127.0.0.1:``port`` here."""
    made: dict[str, socket.socket] = {}

    def bind_inside() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            assert libc.setns(target, CLONE_NEWNET) == 0, "setns failed"
            listener = socket.socket()
            listener.bind(("127.0.0.1", port))
            listener.listen(16)
            listener.settimeout(0.5)
            made["listener"] = listener
        finally:
            os.close(target)

    # The thread ends inside the namespace; only the socket is used afterwards.
    entering = threading.Thread(target=bind_inside)
    entering.start()
    entering.join()
    listener = made["listener"]

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            try:
                inner, _ = listener.accept()
            except TimeoutError:
                continue
            inner.settimeout(None)
            outer = socket.create_connection(("127.0.0.1", port))
            for a, b in ((inner, outer), (outer, inner)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()


@pytest.fixture
def world() -> Iterator[dict[str, str]]:
    """The host and guest namespaces (removed at the end, with whatever is inside)."""
    tag = uuid.uuid4().hex[:6]
    names = {
        "vx-host-1": f"vxh1-{tag}",
        "vx-host-2": f"vxh2-{tag}",
        "guest-1": f"vxg1-{tag}",
        "guest-2": f"vxg2-{tag}",
    }
    try:
        for netns in names.values():
            sh("ip", "netns", "add", netns)
            sh("ip", "-n", netns, "link", "set", "lo", "up")
        first, second = names["vx-host-1"], names["vx-host-2"]
        sh("ip", "-n", first, "link", "add", "underlay", "type", "veth",
           "peer", "name", "underlay", "netns", second)  # fmt: skip
        for host, address in HOSTS.items():
            sh("ip", "-n", names[host], "addr", "add", f"{address}/24", "dev", "underlay")
            sh("ip", "-n", names[host], "link", "set", "underlay", "up")
        yield names
    finally:
        for netns in names.values():
            sh("ip", "netns", "del", netns, check=False)


class Agent:
    """``onestack agent network`` inside a host namespace, stopped with Ctrl-C."""

    def __init__(self, netns: str, host: str, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self.handle = open(log, "wb")  # noqa: SIM115 - kept open for the process's lifetime
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", netns, str(BIN / "onestack"), "agent", "network",
             "--host", host, *args],
            stdout=self.handle, stderr=subprocess.STDOUT, env={**os.environ, **env},
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.handle.close()


def test_guests_on_two_hosts_ping_across_the_tunnel(tmp_path: Path, world: dict[str, str]) -> None:
    started = time.monotonic()
    bus = isolated_amqp_url()
    stop = threading.Event()
    cleanup: list[Callable[[], None]] = [stop.set]
    try:
        for host in HOSTS:
            forward_into(world[host], urlsplit(bus).port or 5672, stop)
        port = free_port()
        env = {"ONESTACK_NETWORK__LOCAL_AGENT": "false", "ONESTACK_NETWORK__DRIVER": "linuxbridge"}
        api = Process(
            ["up", "--port", str(port), "--data-dir", str(tmp_path / "api"), "--bus", bus,
             "--admin-password", ADMIN_PASSWORD],
            tmp_path / "up.out", env,
        )  # fmt: skip
        cleanup.append(api.stop)
        auth_url = f"http://127.0.0.1:{port}/identity/v3"
        api.wait_ready(auth_url)
        for host, address in HOSTS.items():
            data = tmp_path / host
            agent = Agent(
                world[host], host, ["--bus", bus, "--data-dir", str(data)],
                {**env, "ONESTACK_NETWORK__TUNNEL_IP": address}, tmp_path / f"{host}.out",
            )  # fmt: skip
            cleanup.append(agent.stop)
        token = issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/network/v2.0",
            headers={"X-Auth-Token": token},
            timeout=30,
        )

        def agents() -> dict[str, dict[str, Any]]:
            return {a["host"]: a for a in http.get("/agents").json()["agents"]}

        wait("both agents alive", lambda: all(agents().get(h, {}).get("alive") for h in HOSTS))
        assert agents()["vx-host-1"]["configurations"]["tunneling_ip"] == "192.0.2.1"

        created = http.post(
            "/networks", json={"network": {"name": "overlay", "provider:network_type": "vxlan"}}
        )
        assert created.status_code == 201, created.text
        network = created.json()["network"]
        vni, mtu = network["provider:segmentation_id"], network["mtu"]
        assert isinstance(vni, int) and mtu == 1450
        subnet = {"network_id": network["id"], "cidr": "10.252.7.0/24", "ip_version": 4,
                  "enable_dhcp": False}  # fmt: skip
        assert http.post("/subnets", json={"subnet": subnet}).status_code == 201
        device = f"vxlan-{vni}"
        bridge = f"brq{network['id'][:11]}"
        for host, address in HOSTS.items():
            # No guest on the network yet: it floods nowhere (l2population).
            wait(f"{device} on {host}", lambda host=host: device in links(world[host]))
            assert flood_list(world[host], device) == set()
            link = links(world[host])[device]
            assert link["master"] == bridge and link["mtu"] == mtu
            info = link["linkinfo"]["info_data"]
            assert (info["id"], info["local"], info["port"]) == (vni, address, 4789)
        # What keeps DHCP and router ports off the tunnels is a ruleset nft takes.
        overlay = firewall.overlay_ruleset(["fa:16:3e:00:00:01"], "vxtest")
        checked = subprocess.run(
            ["ip", "netns", "exec", world["vx-host-1"], "nft", "-c", "-f", "-"],
            input=overlay, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr

        guests: dict[str, str] = {}
        for index, host in enumerate(HOSTS, start=1):
            body = {"network_id": network["id"], "binding:host_id": host,
                    "device_owner": "compute:nova", "device_id": f"guest-{index}"}  # fmt: skip
            made = http.post("/ports", json={"port": body}).json()["port"]
            assert made["binding:vif_type"] == "bridge", made
            tap, guest = f"tap{made['id'][:11]}", world[f"guest-{index}"]
            address = made["fixed_ips"][0]["ip_address"]
            sh("ip", "-n", world[host], "link", "add", tap, "mtu", str(mtu), "type", "veth",
               "peer", "name", "eth0", "netns", guest)  # fmt: skip
            sh("ip", "-n", guest, "link", "set", "eth0", "address", made["mac_address"],
               "mtu", str(mtu), "up")  # fmt: skip
            sh("ip", "-n", guest, "addr", "add", f"{address}/24", "dev", "eth0")
            sh("ip", "-n", world[host], "link", "set", tap, "master", bridge, "up")
            guests[guest] = address
            wait(
                f"port on {host} ACTIVE",
                lambda ident=made["id"]: (
                    http.get(f"/ports/{ident}").json()["port"]["status"] == "ACTIVE"
                ),
            )
        for host in HOSTS:
            peer = next(a for h, a in HOSTS.items() if h != host)
            wait(
                f"{host} flooding to {peer}, where the other guest is",
                lambda host=host, peer=peer: flood_list(world[host], device) == {peer},
            )
        (one, one_ip), (two, two_ip) = guests.items()
        ping = ("ping", "-c", "1", "-W", "1")
        wait("guest 1 pings guest 2", lambda: sh("ip", "netns", "exec", one, *ping, two_ip,
                                                 check=False).returncode == 0)  # fmt: skip
        assert sh("ip", "netns", "exec", two, *ping, one_ip, check=False).returncode == 0
        # The frames crossed the underlay: the peer's VXLAN device received them.
        stats = sh("ip", "-n", world["vx-host-2"], "-s", "-json", "link", "show", device).stdout
        assert json.loads(stats)[0]["stats64"]["rx"]["packets"] > 0

        for guest in guests:
            sh("ip", "-n", guest, "link", "del", "eth0")
        for listed in http.get("/ports", params={"network_id": network["id"]}).json()["ports"]:
            if listed["device_owner"].startswith("compute:"):
                assert http.delete(f"/ports/{listed['id']}").status_code == 204
        for host in HOSTS:
            wait(f"{host} flooding nowhere without guests",
                 lambda host=host: flood_list(world[host], device) == set())  # fmt: skip
        assert http.delete(f"/networks/{network['id']}").status_code == 204
        for host in HOSTS:
            wait(
                f"{device} and {bridge} gone on {host}",
                lambda host=host: not {device, bridge} & set(links(world[host])),
            )
    finally:
        for step in reversed(cleanup):
            step()
    assert time.monotonic() - started < 90
