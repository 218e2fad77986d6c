"""Compute filter scheduler benchmark (issue #5): the in-process cost of one scheduling
decision (every enabled filter and weigher over the host states) at 1,000 and 10,000 hosts.

The host states are built once per host count: 32 VCPUs, 128 GiB, 2 TB, random usage, one
host in ten in an aggregate with ``SSD=true`` and one in twenty in a zone ``az1``, a few
servers per host. Each request is one instance of a ``m1.small``-sized flavor, drawn in turn
from four kinds:

* ``plain``: no constraint;
* ``zone``: ``availability_zone=az1``;
* ``extra_specs``: ``aggregate_instance_extra_specs:SSD=true``;
* ``anti_affinity``: a server group of 5 members spread over 5 hosts.

Figures: p50/p99/max of ``FilterScheduler.select_destinations`` per kind (``--requests``
per kind), with the hosts' states fresh for each request (the conductor builds them per
request). This is the scheduler's own part of a boot's scheduling latency; the placement
query and the database reads around it are measured by the boot benchmarks.

    .venv/bin/python bench/compute_scheduler.py
    .venv/bin/python bench/compute_scheduler.py --hosts 10000 --requests 500

Output: a markdown table on stdout and in ``bench/results/compute_scheduler.md``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import random
import subprocess
import time
from pathlib import Path

from onestack.compute.scheduler.selection import FilterScheduler
from onestack.compute.scheduler.state import (
    AggregateInfo,
    FlavorInfo,
    HostState,
    RequestSpec,
    ServerGroupInfo,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KINDS = ("plain", "zone", "extra_specs", "anti_affinity")


def make_hosts(count: int, rng: random.Random) -> list[HostState]:
    """``count`` hosts with random usage, some in an SSD aggregate, some in zone az1."""
    hosts = []
    for index in range(count):
        aggregates = []
        if index % 10 == 0:
            aggregates.append(AggregateInfo("ssd", metadata={"SSD": "true"}))
        if index % 20 == 1:
            aggregates.append(AggregateInfo("az1", metadata={"availability_zone": "az1"}))
        servers = rng.randint(0, 6)
        hosts.append(
            HostState(
                host=f"host{index}",
                uuid=f"00000000-0000-0000-0000-{index:012d}",
                vcpus_total=32,
                vcpus_used=servers * 2,
                ram_total_mb=131072,
                ram_used_mb=servers * 4096,
                disk_total_gb=2000,
                disk_used_gb=servers * 40,
                aggregates=aggregates,
                instances={f"s-{index}-{n}": None for n in range(servers)},
                num_io_ops=rng.randint(0, 3),
                hypervisor_type="fake",
            )
        )
    return hosts


def make_spec(kind: str, hosts: list[HostState]) -> RequestSpec:
    flavor = FlavorInfo(vcpus=1, ram_mb=2048, root_gb=20)
    spec = RequestSpec(flavor=flavor, project_id="p", instance_uuids=["new"])
    if kind == "zone":
        spec.availability_zone = "az1"
    elif kind == "extra_specs":
        flavor.extra_specs = {"aggregate_instance_extra_specs:SSD": "true"}
    elif kind == "anti_affinity":
        members = {f"m{n}" for n in range(5)}
        spec.group = ServerGroupInfo("g", "anti-affinity", members=members)
        for n, member in enumerate(sorted(members)):
            hosts[n * 7].instances[member] = "g"
            spec.group.hosts.add(hosts[n * 7].host)
    return spec


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scheduler = FilterScheduler(rng=rng)
    lines = [
        "| hosts | request | p50 ms | p99 ms | max ms |",
        "|---:|---|---:|---:|---:|",
    ]
    for count in args.hosts:
        template = make_hosts(count, rng)
        for kind in KINDS:
            timings = []
            for _ in range(args.requests):
                hosts = copy.deepcopy(template) if kind == "anti_affinity" else template
                spec = make_spec(kind, hosts)
                gc.disable()
                started = time.perf_counter()
                scheduler.select_destinations(spec, hosts, 1)
                timings.append((time.perf_counter() - started) * 1000)
                gc.enable()
                if hosts is template:
                    template = make_hosts(count, rng) if len(timings) % 50 == 0 else template
            lines.append(
                f"| {count:,} | {kind} | {percentile(timings, 0.5):.1f} | "
                f"{percentile(timings, 0.99):.1f} | {max(timings):.1f} |"
            )
            print(lines[-1], flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    footer = f"\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, load {load}"
    table = "\n".join(lines) + footer + "\n"
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "compute_scheduler.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
