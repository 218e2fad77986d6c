"""Real guests: create → ACTIVE → console marker, memory per idle guest, snapshot time.

Starts ``onestack up`` (root: the qemu driver, and the linuxbridge network when its tools
are there), uploads the image ``onestack guest-image build`` makes, and boots N guests
at once through the compute API for each N given. For every guest: seconds from the
create request to ACTIVE and to the guest's marker line in its console log (it has its
DHCP address and its key from the metadata service by then). Then the resident memory
(RSS and PSS) of each idle guest's QEMU process beside the flavor's RAM, and the time of
``server image create`` until the image is active. The acceleration the host's probe
chose is recorded.

    sudo .venv/bin/python bench/guest_boot.py --guests 1 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onestack.compute.guest_image import MARKER, build, default_path

ADMIN_PASSWORD = "bench-admin"
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results"


def openssh_public_key() -> bytes:
    """A new ed25519 public key in OpenSSH format (what ``keypair create --public-key`` takes)."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kb(pid: int) -> tuple[int, int]:
    """RSS and PSS of a process, in KiB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def qemu_pid(server: str) -> int | None:
    found = subprocess.run(["pgrep", "-f", "--", f"-uuid {server}"], capture_output=True,
                           text=True)  # fmt: skip
    pids = [int(p) for p in found.stdout.split()]
    return pids[0] if pids else None


class Cloud:
    """``onestack up`` in a subprocess, and an admin token for its APIs."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = (data_dir / "onestack.out").open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "onestack"), "up", "--port", str(self.port), "--data-dir", str(data_dir),
             "--admin-password", ADMIN_PASSWORD],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.token = ""

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("OS_")},
            "OS_CLIENT_CONFIG_FILE": str(self.data_dir / "clouds.yaml"),
            "OS_CLOUD": "onestack",
        }

    def cli(self, *args: str) -> Any:
        done = subprocess.run([str(BIN / "openstack"), *args, "-f", "json"], env=self.env(),
                              capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(done.stdout) if done.stdout.strip() else None

    async def wait_ready(self) -> None:
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}  # fmt: skip
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                try:
                    answer = await http.post(f"{self.base}/identity/v3/auth/tokens", json=body)
                    if answer.status_code == 201:
                        self.token = answer.headers["X-Subject-Token"]
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit("onestack did not come up")

    def stop(self) -> None:
        os.killpg(self.process.pid, 2)
        self.process.wait(60)
        self.log.close()


async def boot(cloud: Cloud, http: httpx.AsyncClient, name: str, image: str, net: str) -> dict:
    compute = f"{cloud.base}/compute/v2.1"
    started = time.monotonic()
    answer = await http.post(f"{compute}/servers", json={"server": {
        "name": name, "imageRef": image, "flavorRef": "1", "networks": [{"uuid": net}],
        "key_name": "benchkey"}})  # fmt: skip
    answer.raise_for_status()
    server = answer.json()["server"]["id"]
    active = marker = None
    source = ""
    while time.monotonic() - started < 600:
        if active is None:
            shown = (await http.get(f"{compute}/servers/{server}")).json()["server"]
            if shown["status"] == "ERROR":
                raise SystemExit(f"{name} failed: {shown.get('fault')}")
            if shown["status"] == "ACTIVE":
                active = time.monotonic() - started
        if active is not None:
            output = await http.post(f"{compute}/servers/{server}/action",
                                     json={"os-getConsoleOutput": {}})  # fmt: skip
            text = output.json().get("output", "")
            if MARKER in text:
                marker = time.monotonic() - started
                source = text.split(MARKER, 1)[1].split("source=", 1)[-1].split()[0]
                break
        await asyncio.sleep(0.5)
    if marker is None:
        raise SystemExit(f"{name}: no marker within 600 s")
    return {"id": server, "active_s": round(active or 0, 2), "marker_s": round(marker, 2),
            "source": source}  # fmt: skip


async def snapshot(cloud: Cloud, http: httpx.AsyncClient, server: str) -> float:
    started = time.monotonic()
    answer = await http.post(f"{cloud.base}/compute/v2.1/servers/{server}/action",
                             json={"createImage": {"name": f"snap-{server[:8]}"}})  # fmt: skip
    answer.raise_for_status()
    image = answer.headers["Location"].rsplit("/", 1)[-1]
    while time.monotonic() - started < 600:
        shown = (await http.get(f"{cloud.base}/image/v2/images/{image}")).json()
        if shown.get("status") == "active":
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.2)
    raise SystemExit("snapshot did not become active")


async def delete_all(cloud: Cloud, http: httpx.AsyncClient, servers: list[str]) -> None:
    for server in servers:
        await http.delete(f"{cloud.base}/compute/v2.1/servers/{server}")
    for server in servers:
        while (await http.get(f"{cloud.base}/compute/v2.1/servers/{server}")).status_code != 404:
            await asyncio.sleep(0.5)


async def main(counts: list[int]) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="guest-boot-"))
    image_file = default_path(data_dir)
    build(image_file)
    cloud = Cloud(data_dir)
    try:
        await cloud.wait_ready()
        image = cloud.cli("image", "create", "--file", str(image_file), "--disk-format", "qcow2",
                          "--container-format", "bare", "guest")["id"]  # fmt: skip
        net = cloud.cli("network", "create", "benchnet")["id"]
        cloud.cli("subnet", "create", "--network", "benchnet", "--subnet-range",
                  "10.99.0.0/24", "benchsub")  # fmt: skip
        key = data_dir / "key"
        Path(f"{key}.pub").write_bytes(openssh_public_key())
        cloud.cli("keypair", "create", "--public-key", f"{key}.pub", "benchkey")
        hypervisor = cloud.cli("hypervisor", "list", "--long")[0]
        traits = subprocess.run(
            [str(BIN / "openstack"), "resource", "provider", "trait", "list",
             cloud.cli("resource", "provider", "list")[0]["uuid"], "-f", "value"],
            env=cloud.env(), capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        accel = next((t.rsplit("_", 1)[-1].lower() for t in traits
                      if t.startswith("CUSTOM_QEMU_ACCEL_")), "unknown")  # fmt: skip
        results: dict[str, Any] = {
            "acceleration": accel,
            "hypervisor": hypervisor.get("Hypervisor Type"),
            "cpus": os.cpu_count(),
            "flavor": "m1.tiny (1 vCPU, 512 MiB)",
            "runs": [],
        }
        headers = {"X-Auth-Token": cloud.token}
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            # A first guest fetches the image into the host's cache: not measured.
            warm = await boot(cloud, http, "warm", image, net)
            await delete_all(cloud, http, [warm["id"]])
            for count in counts:
                guests = await asyncio.gather(
                    *(boot(cloud, http, f"g{count}-{i}", image, net) for i in range(count))
                )
                await asyncio.sleep(5)  # idle
                memory = [memory_kb(pid) for g in guests if (pid := qemu_pid(g["id"]))]
                run: dict[str, Any] = {
                    "guests": count,
                    "active_s": [g["active_s"] for g in guests],
                    "marker_s": [g["marker_s"] for g in guests],
                    "active_median_s": statistics.median(g["active_s"] for g in guests),
                    "marker_median_s": statistics.median(g["marker_s"] for g in guests),
                    "marker_max_s": max(g["marker_s"] for g in guests),
                    "metadata_from": sorted({g["source"] for g in guests}),
                    "idle_rss_mib": [round(r / 1024, 1) for r, _ in memory],
                    "idle_pss_mib": [round(p / 1024, 1) for _, p in memory],
                }
                if count == counts[0]:
                    run["snapshot_s"] = await snapshot(cloud, http, guests[0]["id"])
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
                await delete_all(cloud, http, [g["id"] for g in guests])
        return results
    finally:
        cloud.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guests", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    outcome = asyncio.run(main(args.guests))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "guest_boot.json").write_text(json.dumps(outcome, indent=1))
    print(json.dumps(outcome, indent=1))
