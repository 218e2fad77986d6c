"""Block storage benchmark (issue #8): create and delete 100 volumes, 16 at a time.

One run per driver against a real ``onestack up`` on a fresh data directory:

1. lift the admin project's volume quotas (``volumes`` and ``gigabytes`` to -1);
2. create N 1 GiB volumes with C requests in flight (``POST /v3/volumes``), each task then
   polling its volume (every 50 ms) until ``available``: the latency of a create is from
   sending the request to seeing ``available`` (API, scheduler cast, agent, report);
3. delete them all the same way (``DELETE``, then poll until 404);
4. report wall time, volumes/s, p50/p99 latency, the time to the ``202``, server CPU and
   resident memory. Every failure is counted.

Drivers: ``file`` (sparse raw files: the product) and ``fake`` (no data at all: the
control plane alone).

    .venv/bin/python bench/volume_lifecycle.py
    .venv/bin/python bench/volume_lifecycle.py --volumes 200 --concurrency 32 --drivers file

Output: a markdown table on stdout and in ``bench/results/volume_lifecycle.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field

import httpx
from volume_common import (
    Server,
    commit,
    onestack_up,
    percentile,
    wait_gone,
    wait_status,
    write_results,
)


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    accepted: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0


async def run_phase(
    server: Server, phase: Phase, items: list[str], concurrency: int, create: bool
) -> list[str]:
    gate = asyncio.Semaphore(concurrency)
    made: list[str] = []
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(item: str) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    if create:
                        body = {"volume": {"size": 1, "name": item}}
                        response = await client.post(
                            f"{server.volume_url}/volumes", json=body, headers=server.headers()
                        )
                    else:
                        response = await client.delete(
                            f"{server.volume_url}/volumes/{item}", headers=server.headers()
                        )
                    phase.accepted.append(time.perf_counter() - started)
                    if response.status_code != 202:
                        phase.errors.append(f"{response.status_code} {response.text[:120]}")
                        return
                    if create:
                        ident = response.json()["volume"]["id"]
                        await wait_status(client, server, "volume", ident, "available")
                        made.append(ident)
                    else:
                        await wait_gone(client, server, "volume", item)
                except (httpx.HTTPError, RuntimeError) as exc:
                    phase.errors.append(str(exc)[:160])
                    return
                phase.latencies.append(time.perf_counter() - started)

        cpu0, wall0 = server.cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in items))
        phase.wall, phase.cpu = time.perf_counter() - wall0, server.cpu_seconds() - cpu0
    return made


async def bench_driver(driver: str, volumes: int, concurrency: int) -> tuple[list[Phase], float]:
    backends = json.dumps([{"name": driver, "driver": driver}])
    with onestack_up({"ONESTACK_VOLUME__BACKENDS": backends}) as server:
        async with httpx.AsyncClient(timeout=60) as client:
            token = await client.get(
                f"{server.base}/identity/v3/auth/tokens",
                headers={"X-Auth-Token": server.token, "X-Subject-Token": server.token},
            )
            project = token.json()["token"]["project"]["id"]
            await client.put(
                f"{server.volume_url}/os-quota-sets/{project}",
                json={"quota_set": {"volumes": -1, "gigabytes": -1}},
                headers=server.headers(),
            )
        create, delete = Phase(f"create ({driver})"), Phase(f"delete ({driver})")
        names = [f"bench-{i}" for i in range(volumes)]
        made = await run_phase(server, create, names, concurrency, True)
        await run_phase(server, delete, made, concurrency, False)
        return [create, delete], server.rss_mib()


def table(results: list[tuple[list[Phase], float]], volumes: int, concurrency: int) -> str:
    lines = [
        f"Volumes: {volumes}, concurrency {concurrency}, 1 GiB each. "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, "
        f"load average at start {os.getloadavg()[0]:.2f}.",
        "",
        "| phase | wall s | volumes/s | p50 s | p99 s | p50 to 202 ms | server CPU ms/volume "
        "| errors | RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phases, rss in results:
        for phase in phases:
            done = len(phase.latencies)
            lines.append(
                f"| {phase.name} | {phase.wall:.2f} | {done / phase.wall if phase.wall else 0:.1f} "
                f"| {percentile(phase.latencies, 50) if done else 0:.3f} "
                f"| {percentile(phase.latencies, 99) if done else 0:.3f} "
                f"| {percentile(phase.accepted, 50) * 1000 if phase.accepted else 0:.1f} "
                f"| {phase.cpu * 1000 / max(done, 1):.1f} | {len(phase.errors)} | {rss:.0f} |"
            )
    errors = [e for phases, _ in results for p in phases for e in p.errors]
    if errors:
        lines += ["", "Errors:", *[f"- {e}" for e in errors[:10]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--drivers", nargs="+", default=["file", "fake"])
    args = parser.parse_args(argv)
    results = [asyncio.run(bench_driver(d, args.volumes, args.concurrency)) for d in args.drivers]
    text = table(results, args.volumes, args.concurrency)
    print(text)
    write_results("volume_lifecycle", text)
    failed = any(p.errors for phases, _ in results for p in phases)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
