"""Placement benchmark (issue #5): allocation candidates at 1,000 and 10,000 providers, and
allocation claims 32 at a time, for onestack and upstream Placement in one run.

For each target (onestack, then upstream Placement from PyPI when it can run here) and each
provider count, on a fresh server and database:

1. **populate** N compute-node providers as Nova's resource tracker does: ``POST
   /resource_providers``, ``PUT …/inventories`` (VCPU 32 at 4.0, MEMORY_MB 131072 at 1.5,
   DISK_GB 2000), ``PUT …/traits`` (``COMPUTE_NODE``, ``HW_CPU_X86_AVX2``, and ``CUSTOM_GOLD``
   on every tenth) and ``PUT …/aggregates`` (one of 10), ``--populate-concurrency`` at a time;
2. **candidates**: ``GET /allocation_candidates`` at microversion 1.36, one request at a time
   (``--queries`` each), latency p50/p99/max and response size for
   * ``limit100``: ``resources=VCPU:1,MEMORY_MB:2048,DISK_GB:20&limit=100``,
   * ``limited``: ``resources=VCPU:1,MEMORY_MB:2048,DISK_GB:20&limit=1000`` (Nova's default
     ``max_placement_results``),
   * ``filtered``: the same with ``required=HW_CPU_X86_AVX2,!CUSTOM_GOLD`` and
     ``member_of=in:<2 of the 10 aggregates>``,
   * ``unlimited``: the first query without ``limit`` (every provider in the answer);
3. **claims**: ``--claims`` boots, ``--concurrency`` at a time. Each boot is one scheduling
   decision: ``GET /allocation_candidates`` (``limited``), pick one of the first 10 at
   random, ``PUT /allocations/{new uuid}`` with ``consumer_generation: null``; on a 409 the
   next pick is tried (at most 5). Wall time, boots/s, p50/p99 of the whole decision and of
   the claim alone, and the 409s; then ``GET /usages`` checks every boot is counted once.

Output: a markdown table on stdout and in ``bench/results/placement_candidates.md``.

    .venv/bin/python bench/placement_candidates.py                      # both, 1k and 10k
    .venv/bin/python bench/placement_candidates.py --only onestack --providers 1000

Exit status 0 when every request answered as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream_placement

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
ONESTACK = REPO_DIR / ".venv" / "bin" / "onestack"
PASSWORD = "bench-admin"
VERSION = "placement 1.36"
AGGREGATES = [str(uuid.UUID(int=index + 1)) for index in range(10)]
LIMITED = "resources=VCPU:1,MEMORY_MB:2048,DISK_GB:20&limit=1000"
QUERIES = {
    "limit100": "resources=VCPU:1,MEMORY_MB:2048,DISK_GB:20&limit=100",
    "limited": LIMITED,
    "filtered": f"{LIMITED}&required=HW_CPU_X86_AVX2,!CUSTOM_GOLD"
    f"&member_of=in:{AGGREGATES[0]},{AGGREGATES[1]}",
    "unlimited": "resources=VCPU:1,MEMORY_MB:2048,DISK_GB:20",
}


@dataclass
class Result:
    target: str
    providers: int
    populate_seconds: float = 0.0
    populate_requests: int = 0
    queries: dict[str, dict[str, float]] = field(default_factory=dict)
    boots: int = 0
    boot_seconds: float = 0.0
    decision_ms: list[float] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)
    rss_mib: float | None = None


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process group's members (onestack: one process)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total / 1024 if total else None


class Target:
    """A running placement endpoint and how to call it."""

    name = "?"
    url = ""
    headers: dict[str, str] = {}
    pid = 0

    async def start(self) -> None: ...

    async def stop(self, keep: bool = False) -> None: ...


class Onestack(Target):
    name = "onestack"

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="placement-bench-"))
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        port = upstream_placement.free_port()
        env = {**os.environ, "ONESTACK_SERVICES": '["identity", "placement"]'}
        self.process = subprocess.Popen(
            [str(ONESTACK), "up", "--port", str(port), "--data-dir", str(self.data_dir),
             "--admin-password", PASSWORD],
            stdout=open(self.data_dir / "onestack-up.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )  # fmt: skip
        self.pid = self.process.pid
        base = f"http://127.0.0.1:{port}"
        auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}  # fmt: skip
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                try:
                    answer = await client.post(f"{base}/identity/v3/auth/tokens", json=auth)
                    if answer.status_code == 201:
                        self.headers = {"X-Auth-Token": answer.headers["x-subject-token"]}
                        self.url = f"{base}/placement"
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("onestack did not start")

    async def stop(self, keep: bool = False) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if keep:
            print(f"onestack data and log kept in {self.data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Upstream(Target):
    name = "upstream"

    def __init__(self, workers: int):
        self.workers = workers
        self.server: upstream_placement.UpstreamPlacement | None = None

    async def start(self) -> None:
        self.server = await asyncio.to_thread(upstream_placement.start, self.workers)
        self.url = self.server.url
        self.pid = self.server.process.pid
        self.headers = {"X-Auth-Token": "admin"}

    async def stop(self, keep: bool = False) -> None:
        if self.server:
            upstream_placement.stop(self.server)


async def populate(client: httpx.AsyncClient, count: int, concurrency: int, result: Result) -> None:
    answer = await client.put("/traits/CUSTOM_GOLD")
    expect(answer, (201, 204), "PUT /traits/CUSTOM_GOLD", result)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            ident = str(uuid.uuid4())
            base = f"/resource_providers/{ident}"
            calls = [
                ("POST", "/resource_providers", {"name": f"compute-{index:05d}", "uuid": ident}),
                ("PUT", f"{base}/inventories", {"resource_provider_generation": 0, "inventories": {
                    "VCPU": {"total": 32, "allocation_ratio": 4.0},
                    "MEMORY_MB": {"total": 131072, "allocation_ratio": 1.5, "reserved": 512},
                    "DISK_GB": {"total": 2000}}}),
                ("PUT", f"{base}/traits", {"resource_provider_generation": 1, "traits": [
                    "COMPUTE_NODE", "HW_CPU_X86_AVX2", *(["CUSTOM_GOLD"][: index % 10 == 0])]}),
                ("PUT", f"{base}/aggregates", {"resource_provider_generation": 2,
                                               "aggregates": [AGGREGATES[index % 10]]}),
            ]  # fmt: skip
            for method, path, body in calls:
                answer = await send(client, result, method, path, json=body)
                result.populate_requests += 1
                if answer is None or not expect(answer, (200,), f"{method} {path}", result):
                    break

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.populate_seconds = time.perf_counter() - started


async def send(
    client: httpx.AsyncClient, result: Result, method: str, path: str, **kwargs: Any
) -> httpx.Response | None:
    """One request; a transport error is recorded, not raised."""
    try:
        return await client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        result.errors.append(f"{method} {path}: {type(exc).__name__} {exc}")
        return None


def expect(answer: httpx.Response, statuses: tuple[int, ...], what: str, result: Result) -> bool:
    if answer.status_code in statuses:
        return True
    if len(result.errors) < 20:
        result.errors.append(f"{what}: {answer.status_code} {answer.text[:200]}")
    else:
        result.errors.append("…")
    return False


async def measure_queries(client: httpx.AsyncClient, rounds: int, result: Result) -> None:
    for name, query in QUERIES.items():
        times, size, hits = [], 0, 0
        repeat = max(5, rounds // 10) if name == "unlimited" else rounds
        for _ in range(repeat):
            started = time.perf_counter()
            answer = await send(client, result, "GET", f"/allocation_candidates?{query}")
            times.append((time.perf_counter() - started) * 1000)
            if answer is not None and expect(answer, (200,), f"GET candidates {name}", result):
                size = len(answer.content)
                hits = len(answer.json()["allocation_requests"])
        result.queries[name] = {
            "p50": percentile(times, 50),
            "p99": percentile(times, 99),
            "max": max(times),
            "kib": size / 1024,
            "candidates": hits,
        }


async def boot_storm(
    client: httpx.AsyncClient, boots: int, concurrency: int, result: Result
) -> None:
    project = f"bench-{uuid.uuid4().hex[:8]}"
    remaining = list(range(boots))
    rng = random.Random(5)

    async def boot() -> None:
        decision_started = time.perf_counter()
        answer = await send(client, result, "GET", f"/allocation_candidates?{LIMITED}")
        if answer is None or not expect(answer, (200,), "GET candidates (boot)", result):
            return
        options = answer.json()["allocation_requests"][:10]
        rng.shuffle(options)
        consumer = str(uuid.uuid4())
        for option in options[:5]:
            body = {**option, "project_id": project, "user_id": "bench",
                    "consumer_generation": None}  # fmt: skip
            claim_started = time.perf_counter()
            claimed = await send(client, result, "PUT", f"/allocations/{consumer}", json=body)
            result.claim_ms.append((time.perf_counter() - claim_started) * 1000)
            if claimed is None:
                return
            if claimed.status_code == 204:
                result.boots += 1
                result.decision_ms.append((time.perf_counter() - decision_started) * 1000)
                return
            if claimed.status_code != 409:
                expect(claimed, (204,), "PUT allocations", result)
                return
            result.conflicts += 1
        result.errors.append("a boot found no host after 5 conflicts")

    async def worker() -> None:
        while remaining:
            remaining.pop()
            await boot()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.boot_seconds = time.perf_counter() - started
    usages = await send(client, result, "GET", f"/usages?project_id={project}")
    if usages is not None and expect(usages, (200,), "GET /usages", result):
        used = usages.json()["usages"].get("VCPU", 0)
        if used != result.boots:
            result.errors.append(f"usage check: {used} VCPU used for {result.boots} boots")


async def run_one(target: Target, providers: int, args: argparse.Namespace) -> Result:
    result = Result(target.name, providers)
    await target.start()
    try:
        headers = {**target.headers, "OpenStack-API-Version": VERSION}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=target.url, headers=headers, timeout=120, limits=limits
        ) as client:
            print(f"[{target.name} {providers}] populating", file=sys.stderr)
            await populate(client, providers, args.populate_concurrency, result)
            print(f"[{target.name} {providers}] querying", file=sys.stderr)
            await measure_queries(client, args.queries, result)
            print(f"[{target.name} {providers}] booting", file=sys.stderr)
            await boot_storm(client, args.claims, args.concurrency, result)
        result.rss_mib = rss_mib(target.pid)
    finally:
        await target.stop(keep=bool(result.errors))
    return result


def report(results: list[Result], meta: dict[str, str]) -> str:
    lines = [
        "| target | providers | populate (s, req/s) | limit=100 p50/p99 ms "
        "| limit=1000 p50/p99 ms | filtered p50/p99 ms "
        "| unlimited p50/p99 ms (KiB) | boots/s (wall s) | decision p50/p99 ms "
        "| claim p50/p99 ms | 409s | RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pair(q: dict[str, dict[str, float]], name: str) -> str:
        return f"{q[name]['p50']:.1f} / {q[name]['p99']:.1f}" if name in q else "-"

    for r in results:
        q = r.queries

        unlimited = (
            f"{pair(q, 'unlimited')} ({q['unlimited']['kib']:.0f})" if "unlimited" in q else "-"
        )
        rate = r.boots / r.boot_seconds if r.boot_seconds else 0
        lines.append(
            f"| {r.target} | {r.providers:,} | {r.populate_seconds:.1f}, "
            f"{r.populate_requests / r.populate_seconds if r.populate_seconds else 0:.0f} "
            f"| {pair(q, 'limit100')} | {pair(q, 'limited')} | {pair(q, 'filtered')} | {unlimited} "
            f"| {rate:.1f} ({r.boot_seconds:.1f}) "
            f"| {percentile(r.decision_ms, 50):.1f} / {percentile(r.decision_ms, 99):.1f} "
            f"| {percentile(r.claim_ms, 50):.1f} / {percentile(r.claim_ms, 99):.1f} "
            f"| {r.conflicts} | {r.rss_mib or 0:.0f} | {len(r.errors)} |"
        )
    lines.append("")
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    for r in results:
        for error in r.errors[:5]:
            lines.append(f"- error ({r.target}, {r.providers}): {error}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--populate-concurrency", type=int, default=16)
    parser.add_argument("--only", choices=["onestack", "upstream"])
    parser.add_argument("--workers", type=int, default=2, help="upstream gunicorn workers")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> list[Result]:
    results = []
    for providers in args.providers:
        targets: list[Target] = []
        if args.only in (None, "onestack"):
            targets.append(Onestack())
        if args.only in (None, "upstream"):
            targets.append(Upstream(args.workers))
        for target in targets:
            results.append(await run_one(target, providers, args))
            RESULTS_DIR.mkdir(exist_ok=True)
            (RESULTS_DIR / "placement_candidates.partial.md").write_text(report(results, {}))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()[0]
    results = asyncio.run(main_async(args))
    commit = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "load average at start": f"{load:.2f}",
        "upstream": f"openstack-placement {upstream_placement.version()}, gunicorn "
        f"{args.workers} sync workers, SQLite, noauth2"
        if args.only != "onestack"
        else "not run",
        "onestack": "onestack up (identity + placement), one process, SQLite",
        "settings": f"{args.queries} queries per kind (unlimited: a tenth), {args.claims} boots "
        f"at concurrency {args.concurrency}, microversion 1.36",
    }
    text = report(results, meta)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "placement_candidates.md").write_text(text)
    print(text)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
