"""Booting servers on fake hosts through the whole control plane, in one process.

A cloud of identity, image, network, placement and compute (``--fake-hosts`` agents of the
``fake`` driver) is started in this process and driven through its ASGI app: N servers
are created at a given concurrency and waited for until ACTIVE. Reported: wall time,
servers/s, the conductor's scheduling latency (candidates + host states + filters and
weighers + claim) p50/p99, list latency with every server present, and the process RSS.

    .venv/bin/python bench/compute_boot.py --hosts 100 1000 --servers 1000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onestack.cloud import Cloud
from onestack.compute.unit import ComputeUnit
from onestack.core.config import Settings

ADMIN_PASSWORD = "bench-admin"
V21 = "/compute/v2.1"
RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(hosts: int, servers: int, concurrency: int, with_ports: bool) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"compute-boot-{hosts}-"))
    settings = Settings(data_dir=data_dir, port=8000, log_level="WARNING")
    settings.services = ["identity", "image", "network", "placement", "compute"]
    settings.compute.fake_hosts = hosts
    settings.compute.report_interval = 30.0
    settings.compute.power_sync_interval = 600.0
    settings.placement.randomize_allocation_candidates = True
    cloud = Cloud(settings)
    started = time.perf_counter()
    await cloud.start(admin_password=ADMIN_PASSWORD)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cloud.app), base_url="http://127.0.0.1:8000",
        timeout=600,
    )  # fmt: skip
    auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}  # fmt: skip
    token_response = await http.post("/identity/v3/auth/tokens", json=auth)
    token = token_response.headers["x-subject-token"]
    project = token_response.json()["token"]["project"]["id"]
    headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.90"}
    unit = cloud.units["compute"]
    assert isinstance(unit, ComputeUnit)
    while True:
        providers = await http.get("/placement/resource_providers", headers=headers)
        if len(providers.json()["resource_providers"]) >= hosts:
            break
        await asyncio.sleep(0.2)
    ready = time.perf_counter() - started
    unlimited = {"instances": -1, "cores": -1, "ram": -1}
    await http.put(f"{V21}/os-quota-sets/{project}", headers=headers,
                   json={"quota_set": unlimited})  # fmt: skip
    image = await http.post("/image/v2/images", headers=headers, json={
        "name": "img", "disk_format": "raw", "container_format": "bare",
        "visibility": "public"})  # fmt: skip
    image_id = image.json()["id"]
    await http.put(f"/image/v2/images/{image_id}/file", content=b"\0" * 4096,
                   headers={**headers, "Content-Type": "application/octet-stream"})  # fmt: skip
    networks: Any = "none"
    if with_ports:
        net = await http.post("/network/v2.0/networks", headers=headers,
                              json={"network": {"name": "bench"}})  # fmt: skip
        net_id = net.json()["network"]["id"]
        await http.post("/network/v2.0/subnets", headers=headers, json={"subnet": {
            "network_id": net_id, "cidr": "10.0.0.0/16", "ip_version": 4}})  # fmt: skip
        networks = [{"uuid": net_id}]
    unit.conductor.schedule_seconds.clear()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(servers):
        queue.put_nowait(index)
    ids: list[str] = []
    errors: list[str] = []

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            body = {"server": {"name": f"s{index}", "imageRef": image_id, "flavorRef": "1",
                               "networks": networks}}  # fmt: skip
            answer = await http.post(f"{V21}/servers", headers=headers, json=body)
            if answer.status_code != 202:
                errors.append(f"{answer.status_code} {answer.text[:120]}")
                continue
            ids.append(answer.json()["server"]["id"])

    boot_started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    accepted = time.perf_counter() - boot_started
    # Wait with the cheap summary list of what still builds, then count the failures.
    while True:
        building = await http.get(f"{V21}/servers?status=BUILD", headers=headers)
        if not building.json()["servers"]:
            break
        await asyncio.sleep(0.25)
    failed_list = await http.get(f"{V21}/servers?status=ERROR", headers=headers)
    failed = len(failed_list.json()["servers"])
    wall = time.perf_counter() - boot_started
    list_times = []
    for path in ("/servers", "/servers/detail", "/servers/detail?limit=100"):
        begun = time.perf_counter()
        await http.get(f"{V21}{path}", headers=headers)
        list_times.append((path, time.perf_counter() - begun))
    schedule = list(unit.conductor.schedule_seconds)
    result = {
        "hosts": hosts,
        "servers": servers,
        "concurrency": concurrency,
        "ports": with_ports,
        "startup_s": round(ready, 1),
        "accept_s": round(accepted, 2),
        "wall_s": round(wall, 2),
        "servers_per_s": round(servers / wall, 1),
        "active": servers - failed - len(errors),
        "errors": len(errors) + failed,
        "error_kinds": sorted(set(errors))[:5],
        "schedule_p50_ms": round(percentile(schedule, 0.5) * 1000, 1),
        "schedule_p99_ms": round(percentile(schedule, 0.99) * 1000, 1),
        "schedule_mean_ms": round(statistics.fmean(schedule) * 1000, 1) if schedule else None,
        "list_ms": {path: round(seconds * 1000, 1) for path, seconds in list_times},
        "rss_mb": round(rss_mb(), 1),
    }
    await http.aclose()
    await cloud.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--ports", action="store_true", help="one port per server (noop)")
    args = parser.parse_args()
    os.environ.setdefault("ONESTACK_NETWORK__DRIVER", "noop")
    results = []
    for hosts in args.hosts:
        # One cloud per process run: a fresh interpreter keeps RSS figures comparable.
        if len(args.hosts) > 1:
            command = [sys.executable, __file__, "--hosts", str(hosts), "--servers",
                       str(args.servers), "--concurrency", str(args.concurrency)]  # fmt: skip
            if args.ports:
                command.append("--ports")
            subprocess.run(command, check=False)
            continue
        results.append(asyncio.run(run(hosts, args.servers, args.concurrency, args.ports)))
    if results:
        RESULTS.mkdir(exist_ok=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
        for result in results:
            result["commit"] = commit
            result["load_average"] = os.getloadavg()[0]
            print(json.dumps(result))
            with (RESULTS / "compute_boot.jsonl").open("a") as out:
                out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
