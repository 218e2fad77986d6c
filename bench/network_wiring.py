"""Network wiring benchmark (issue #4): how long until a new port answers on the wire.

Root only (the linuxbridge data plane). One run against a real ``onestack up`` on a fresh
temporary data directory, with the linuxbridge driver:

1. start the server, wait for a token, read the network agent's host from
   ``GET /v2.0/agents``;
2. a network with a DHCP subnet, and an ingress ICMP rule in the admin project's
   ``default`` group (otherwise the probes below are refused: default deny ingress);
3. per sample (``--ports``, one at a time): ``POST /v2.0/ports`` bound to the agent's host
   (``binding:host_id``, ``device_owner`` ``compute:nova``), then at once plug a stand-in
   guest the way compute plugs a tap (a namespace, a veth ``tap<port>`` on the bridge with
   the port's MAC and its fixed address), and time from the POST until:
   - ``answers``: the guest answers ping from the network's DHCP namespace (bridge,
     security-group rules and anti-spoofing in place);
   - ``active``: ``GET /v2.0/ports/<id>`` says ``ACTIVE`` (the agent saw the tap, the
     service recorded it: when compute would get ``network-vif-plugged``);
   - ``known``: for a second stand-in guest on a fresh port, the agent has put the port
     in dnsmasq's hosts file (dnsmasq ignores MACs it does not know, and udhcpc retries
     only once a second, so the bench waits for this before asking);
   - ``lease``: that guest then has its address from dnsmasq (busybox ``udhcpc``);
4. delete everything, check that no namespace or bridge of the run remains, stop the
   server.

Output: a markdown table on stdout and in ``bench/results/network_wiring.md``.

    sudo .venv/bin/python bench/network_wiring.py --ports 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from network_ports import (
    DEFAULT_ONESTACK,
    RESULTS_DIR,
    expect,
    free_port,
    percentile,
    start_server,
    stop_server,
    wait_for_token,
)

CIDR_PREFIX = "10.252.9"
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ip addr add "$ip/$mask" dev "$interface" ;; esac
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def plug(guest: str, port: dict[str, Any], address: str | None) -> None:
    """A namespace wired like a guest: veth tap<port> on the bridge, eth0 with the MAC."""
    tap = "tap" + port["id"][:11]
    inner = "g" + port["id"][:11]
    sh("ip", "netns", "add", guest)
    sh("ip", "link", "add", tap, "type", "veth", "peer", "name", inner, "netns", guest)
    sh("ip", "-n", guest, "link", "set", inner, "address", port["mac_address"], "up")
    if address:
        sh("ip", "-n", guest, "addr", "add", f"{address}/24", "dev", inner)
    sh("ip", "link", "set", tap, "master", port["binding:vif_details"]["bridge_name"], "up")


def unplug(guest: str, port_id: str) -> None:
    sh("ip", "netns", "del", guest, check=False)
    sh("ip", "link", "del", "tap" + port_id[:11], check=False)


async def new_port(client: httpx.AsyncClient, network_id: str, host: str) -> dict[str, Any]:
    body = {
        "network_id": network_id,
        "binding:host_id": host,
        "device_owner": "compute:nova",
        "device_id": str(uuid.uuid4()),
    }
    port: dict[str, Any] = expect(
        await client.post("/network/v2.0/ports", json={"port": body}), 201, "create port"
    )["port"]
    return port


async def until(check: Any, timeout: float = 30.0) -> float:
    """Poll ``check`` (sync or async) every 10 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise RuntimeError("timed out")


async def sample(
    client: httpx.AsyncClient, network_id: str, host: str, dhcp_ns: str, data_dir: Path
) -> dict[str, float]:
    script = data_dir / "udhcpc.sh"
    hosts = data_dir / "network" / "dhcp" / network_id / "hosts"
    guest = f"oswire-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    port = await new_port(client, network_id, host)
    address = port["fixed_ips"][0]["ip_address"]
    plug(guest, port, address)

    def answers() -> bool:
        probe = ["ip", "netns", "exec", dhcp_ns, "ping", "-c", "1", "-W", "0.2", address]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    async def active() -> bool:
        shown = await client.get(f"/network/v2.0/ports/{port['id']}")
        return bool(shown.json()["port"]["status"] == "ACTIVE")

    try:
        answered = await until(lambda: asyncio.to_thread(answers))
        activated = await until(active)
    finally:
        unplug(guest, port["id"])
        await client.delete(f"/network/v2.0/ports/{port['id']}")
    leased_guest = f"oswire-{uuid.uuid4().hex[:6]}"
    lease_started = time.monotonic()
    leased_port = await new_port(client, network_id, host)
    plug(leased_guest, leased_port, None)
    try:
        # dnsmasq ignores a MAC it does not know, and udhcpc retries only once a second:
        # wait for the agent's hosts-file update, then time one DHCP exchange.
        mac = leased_port["mac_address"]
        await until(lambda: hosts.exists() and mac in hosts.read_text())
        known = time.monotonic()
        inner = "g" + leased_port["id"][:11]
        dhcp = ["ip", "netns", "exec", leased_guest, "busybox", "udhcpc", "-i", inner]
        dhcp += ["-n", "-q", "-t", "5", "-T", "1", "-s", str(script)]
        await asyncio.to_thread(sh, *dhcp)
        leased = time.monotonic()
    finally:
        unplug(leased_guest, leased_port["id"])
        await client.delete(f"/network/v2.0/ports/{leased_port['id']}")
    return {
        "answers": answered - started,
        "active": activated - started,
        "known": known - lease_started,
        "lease": leased - lease_started,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="onestack-wiring-"))
    password = "bench-" + uuid.uuid4().hex[:8]
    port = free_port()
    proc = start_server(Path(args.onestack_cmd), port, data_dir, password)
    script = data_dir / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    samples: list[dict[str, float]] = []
    leftovers: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            token, project_id = await wait_for_token(client, proc, password, 90)
            client.headers["X-Auth-Token"] = token
            agents = expect(await client.get("/network/v2.0/agents"), 200, "agents")["agents"]
            configuration = agents[0]["configurations"]
            if configuration.get("driver") != "linuxbridge":
                raise RuntimeError(f"the cloud runs {configuration.get('driver')}, not linuxbridge")
            host = agents[0]["host"]
            net = expect(
                await client.post("/network/v2.0/networks", json={"network": {"name": "wire"}}),
                201,
                "network",
            )["network"]
            subnet = {"network_id": net["id"], "cidr": f"{CIDR_PREFIX}.0/24", "ip_version": 4}
            expect(
                await client.post("/network/v2.0/subnets", json={"subnet": subnet}), 201, "subnet"
            )
            groups = await client.get(f"/network/v2.0/security-groups?project_id={project_id}")
            default = [g for g in groups.json()["security_groups"] if g["name"] == "default"]
            if not default:
                await new_port(client, net["id"], host)  # creates the project's default group
                groups = await client.get(f"/network/v2.0/security-groups?project_id={project_id}")
                default = [g for g in groups.json()["security_groups"] if g["name"] == "default"]
            rule = {"security_group_id": default[0]["id"], "direction": "ingress"}
            rule |= {"protocol": "icmp", "ethertype": "IPv4"}
            expect(
                await client.post(
                    "/network/v2.0/security-group-rules", json={"security_group_rule": rule}
                ),
                201,
                "rule",
            )
            dhcp_ns = f"qdhcp-{net['id']}"
            try:
                await until(lambda: dhcp_ns in sh("ip", "netns", "list").stdout)
                for _ in range(args.ports):
                    samples.append(await sample(client, net["id"], host, dhcp_ns, data_dir))
            finally:
                ports = await client.get(f"/network/v2.0/ports?network_id={net['id']}")
                for leftover in ports.json()["ports"]:
                    if leftover["device_owner"].startswith("compute:"):
                        await client.delete(f"/network/v2.0/ports/{leftover['id']}")
                await client.delete(f"/network/v2.0/networks/{net['id']}")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                names = sh("ip", "netns", "list").stdout + sh("ip", "-o", "link").stdout
                leftovers = [n for n in (dhcp_ns, "brq" + net["id"][:11]) if n in names]
                if not leftovers:
                    break
                await asyncio.sleep(0.2)
    finally:
        stop_server(proc)
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    return {"samples": samples, "leftovers": leftovers}


def report(result: dict[str, Any]) -> str:
    samples = result["samples"]
    lines = [
        "## Network wiring latency (linuxbridge)",
        "",
        f"{len(samples)} ports, one at a time; host {os.uname().nodename}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}.",
        "",
        "| from POST /v2.0/ports until | p50 | p95 | max |",
        "|---|---|---|---|",
    ]
    for key, text in (
        ("answers", "the guest answers ping on the wire"),
        ("active", "the port is ACTIVE in the API"),
        ("known", "dnsmasq knows the port (hosts file)"),
        ("lease", "a DHCP guest has its lease"),
    ):
        values = sorted(s[key] for s in samples)
        p50, p95 = percentile(values, 50), percentile(values, 95)
        if values and p50 is not None and p95 is not None:
            cells = [f"{v * 1000:.0f} ms" for v in (p50, p95, values[-1])]
            lines.append(f"| {text} | {' | '.join(cells)} |")
    lines += ["", f"Leftovers after the deletes: {result['leftovers'] or 'none'}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=20, help="samples (20)")
    parser.add_argument("--onestack-cmd", default=str(DEFAULT_ONESTACK))
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the wiring benchmark needs root (the linuxbridge data plane)", file=sys.stderr)
        return 2
    result = asyncio.run(run(args))
    text = report(result)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "network_wiring.md").write_text(text)
    return 0 if len(result["samples"]) == args.ports and not result["leftovers"] else 1


if __name__ == "__main__":
    sys.exit(main())
