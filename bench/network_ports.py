"""Network port benchmark (issue #4): create 1,000 ports on one network, 16 at a time.

One run against a real ``onestack up`` on a fresh temporary data directory:

1. start the server in its own process group and wait for the first ``201`` of
   ``POST /identity/v3/auth/tokens`` (admin, project ``admin``);
2. lift the admin project's port quota (``PUT /network/v2.0/quotas/<project>``, ``port: -1``:
   the default of 500 would stop the run half way);
3. for each phase, a fresh network with a ``/20`` IPv4 subnet (4,093 addresses), then N
   ``POST /network/v2.0/ports`` with C in flight at a time (an ``httpx.AsyncClient``):
   wall time, ports/s, p50/p99 latency per create, server CPU; every answer other than
   ``201`` is an error, reported with its status and the start of its body;
4. verify each phase: list the network's ports page by page (``limit`` + ``ports_links``
   ``rel=next``), check that every created port is listed once (the data plane's own
   ``network:*`` ports aside) and count duplicate
   ``fixed_ips`` addresses (must be 0);
5. read the server's resident memory (``VmRSS``); with the linuxbridge data plane, delete
   the ports and networks and wait for the agent to remove their namespace and bridge;
   stop the server (SIGINT, SIGKILL after 20 s), delete the data directory.

Phases: the headline (``--ports`` 1000 at ``--concurrency`` 16), then a baseline at
concurrency 1 (``--baseline-ports`` 200) for the latency of one create with no queueing.

Output: a markdown table on stdout and in ``bench/results/network_ports.md``.

    .venv/bin/python bench/network_ports.py
    .venv/bin/python bench/network_ports.py --ports 2000 --concurrency 32 --baseline-ports 0

Exit status: 0 when every create succeeded and every check passed, 1 otherwise, 2 when the
server could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_ONESTACK = REPO_DIR / ".venv" / "bin" / "onestack"
CIDR = "10.64.0.0/20"
REQUEST_TIMEOUT = 60.0
STOP_GRACE = 20.0
PAGE_LIMIT = 250
SNIPPET = 200
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- results


@dataclass
class CpuSample:
    """CPU seconds used so far by the server: whole process and its main thread."""

    total_s: float
    main_thread_s: float


@dataclass
class Phase:
    """One create phase: N ports on a fresh network at one concurrency, and its checks."""

    ports: int
    concurrency: int
    network_id: str = ""
    ok: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    """Latency of each 201, in completion order."""
    errors: Counter[str] = field(default_factory=Counter)
    """Error description (status and body snippet, or transport error) -> count."""
    created_ids: list[str] = field(default_factory=list)
    created_addresses: list[str] = field(default_factory=list)
    server_cpu_s: float = 0.0
    server_main_thread_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    listed: int = 0
    """Ports the paged listing of the network returned (duplicates included)."""
    listed_unique: int = 0
    pages: int = 0
    list_s: float = 0.0
    missing: int = 0
    """Created ports (201) absent from the listing."""
    addresses: int = 0
    duplicate_addresses: int = 0
    """Listed fixed_ips addresses beyond the first holder of each (must be 0)."""
    duplicate_created_addresses: int = 0
    """The same count over the addresses in the 201 answers."""
    list_error: str | None = None

    @property
    def sorted_ms(self) -> list[float]:
        """The latencies, sorted (for percentiles)."""
        return sorted(self.latencies_ms)

    @property
    def error_count(self) -> int:
        """Requests that did not answer 201."""
        return sum(self.errors.values())

    @property
    def passed(self) -> bool:
        """Every create answered 201 and the listing checks found nothing wrong."""
        return (
            self.error_count == 0
            and self.ok == self.ports
            and self.list_error is None
            and self.listed == self.listed_unique == self.ports
            and self.missing == 0
            and self.duplicate_addresses == 0
            and self.duplicate_created_addresses == 0
        )


@dataclass
class Run:
    """Everything one benchmark run measured."""

    base_url: str = ""
    startup_s: float | None = None
    rss_start_mib: float | None = None
    rss_end_mib: float | None = None
    hwm_mib: float | None = None
    threads: int | None = None
    stop_s: float | None = None
    stop_signal: str = ""
    phases: list[Phase] = field(default_factory=list)
    setup_error: str | None = None
    load_at_start: tuple[float, float, float] = (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- /proc


def cpu_sample(pid: int) -> CpuSample:
    """User + system CPU seconds of process ``pid`` and of its main thread."""

    def ticks(path: str) -> int:
        raw = Path(path).read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])

    return CpuSample(
        ticks(f"/proc/{pid}/stat") / TICKS, ticks(f"/proc/{pid}/task/{pid}/stat") / TICKS
    )


def proc_status(pid: int) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (empty when the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def kib_to_mib(value: str | None) -> float | None:
    """``'123456 kB'`` -> MiB."""
    return int(value.split()[0]) / 1024 if value else None


# --------------------------------------------------------------------------- server


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(cmd: Path, port: int, data_dir: Path, password: str) -> subprocess.Popen[bytes]:
    """Spawn ``onestack up`` in its own process group, its output to a log in ``data_dir``."""
    argv = [str(cmd), "up", "--port", str(port), "--data-dir", str(data_dir)]
    argv += ["--admin-password", password]
    with open(data_dir / "onestack-up.log", "wb") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(data_dir),
            start_new_session=True,
        )


def stop_server(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> tuple[float, str]:
    """SIGINT to the process group, SIGKILL after ``grace`` s; returns (seconds, signal)."""
    started = time.perf_counter()
    if proc.poll() is not None:
        return 0.0, "already exited"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
        used = "SIGINT"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        used = "SIGKILL"
    # Anything the server left in its group goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return time.perf_counter() - started, used


def auth_body(password: str) -> dict[str, Any]:
    """Password authentication of ``admin``, scoped to project ``admin``."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }


async def wait_for_token(
    client: httpx.AsyncClient, proc: subprocess.Popen[bytes], password: str, timeout: float
) -> tuple[str, str]:
    """Poll token issue every 50 ms until it answers 201; returns (token, project id)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"onestack up exited with status {proc.returncode}")
        try:
            resp = await client.post("/identity/v3/auth/tokens", json=auth_body(password))
            if resp.status_code == 201:
                project_id = str(resp.json()["token"]["project"]["id"])
                return resp.headers["X-Subject-Token"], project_id
            last = f"HTTP {resp.status_code}: {resp.text[:SNIPPET]}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no token within {timeout:.0f} s (last: {last})")


# --------------------------------------------------------------------------- load


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def describe(resp: httpx.Response) -> str:
    """``HTTP 409: {"NeutronError": …`` with the body cut to one short line."""
    snippet = " ".join(resp.text.split())[:SNIPPET]
    return f"HTTP {resp.status_code}: {snippet}"


def expect(resp: httpx.Response, status: int, what: str) -> dict[str, Any]:
    """The JSON body of ``resp``; RuntimeError naming ``what`` unless it has ``status``."""
    if resp.status_code != status:
        raise RuntimeError(f"{what}: {describe(resp)}")
    body: dict[str, Any] = resp.json()
    return body


async def make_network(client: httpx.AsyncClient, name: str) -> str:
    """A network with one /20 IPv4 subnet; returns the network's id."""
    net = expect(
        await client.post("/network/v2.0/networks", json={"network": {"name": name}}),
        201,
        "create network",
    )
    network_id = str(net["network"]["id"])
    subnet = {"network_id": network_id, "cidr": CIDR, "ip_version": 4, "name": name}
    expect(
        await client.post("/network/v2.0/subnets", json={"subnet": subnet}), 201, "create subnet"
    )
    return network_id


async def create_ports(client: httpx.AsyncClient, phase: Phase, pid: int) -> None:
    """Create ``phase.ports`` ports, ``phase.concurrency`` in flight; fill in the figures."""
    body = {"port": {"network_id": phase.network_id}}
    remaining = iter(range(phase.ports))

    async def worker() -> None:
        for _ in remaining:  # shared iterator: each index goes to exactly one worker
            t0 = time.perf_counter()
            try:
                resp = await client.post("/network/v2.0/ports", json=body)
            except httpx.HTTPError as exc:
                phase.errors[f"{type(exc).__name__}: {exc}"[:SNIPPET]] += 1
                continue
            elapsed = time.perf_counter() - t0
            if resp.status_code != 201:
                phase.errors[describe(resp)] += 1
                continue
            port = resp.json()["port"]
            phase.ok += 1
            phase.latencies_ms.append(elapsed * 1000)
            phase.created_ids.append(port["id"])
            phase.created_addresses += [ip["ip_address"] for ip in port.get("fixed_ips", [])]

    cpu0, client0 = cpu_sample(pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    phase.wall_s = time.perf_counter() - started
    cpu1 = cpu_sample(pid)
    phase.client_cpu_s = time.process_time() - client0
    phase.server_cpu_s = cpu1.total_s - cpu0.total_s
    phase.server_main_thread_cpu_s = cpu1.main_thread_s - cpu0.main_thread_s
    phase.duplicate_created_addresses = len(phase.created_addresses) - len(
        set(phase.created_addresses)
    )


async def verify(client: httpx.AsyncClient, phase: Phase) -> None:
    """List the network's ports page by page and check them against what was created."""
    started = time.perf_counter()
    ids: list[str] = []
    addresses: list[str] = []
    url: str | None = "/network/v2.0/ports"
    params: dict[str, Any] | None = {"network_id": phase.network_id, "limit": PAGE_LIMIT}
    while url is not None:
        resp = await client.get(url, params=params)
        if resp.status_code != 200:
            phase.list_error = f"list page {phase.pages + 1}: {describe(resp)}"
            break
        body = resp.json()
        phase.pages += 1
        for port in body.get("ports", []):
            if port.get("device_owner", "").startswith("network:"):
                continue  # the data plane's own (the linuxbridge driver's DHCP port)
            ids.append(port["id"])
            addresses += [ip["ip_address"] for ip in port.get("fixed_ips", [])]
        nxt = [link["href"] for link in body.get("ports_links", []) if link.get("rel") == "next"]
        url, params = (nxt[0], None) if nxt and body.get("ports") else (None, None)
        if phase.pages > phase.ports + 10:
            phase.list_error = "paging does not end"
            break
    phase.list_s = time.perf_counter() - started
    phase.listed = len(ids)
    phase.listed_unique = len(set(ids))
    phase.missing = len(set(phase.created_ids) - set(ids))
    phase.addresses = len(addresses)
    phase.duplicate_addresses = len(addresses) - len(set(addresses))


async def remove_data_plane(client: httpx.AsyncClient, phases: list[Phase], width: int) -> None:
    """With a real data plane (linuxbridge), delete what the run made so nothing stays on
    the host (the DHCP namespace and dnsmasq, the bridge); the noop driver needs nothing."""
    agents = (await client.get("/network/v2.0/agents")).json().get("agents", [])
    if not any(a.get("configurations", {}).get("driver") == "linuxbridge" for a in agents):
        return
    gate = asyncio.Semaphore(width)

    async def delete(port_id: str) -> None:
        async with gate:
            await client.delete(f"/network/v2.0/ports/{port_id}")

    for phase in phases:
        await asyncio.gather(*(delete(port_id) for port_id in phase.created_ids))
        await client.delete(f"/network/v2.0/networks/{phase.network_id}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if not any(phase.network_id in names for phase in phases):
            return
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, run_info: Run) -> None:
    """Start the server, run every phase, read its memory and stop it."""
    data_dir = Path(tempfile.mkdtemp(prefix="onestack-bench-ports-"))
    password = "bench-" + os.urandom(8).hex()
    port = free_port()
    run_info.base_url = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen[bytes] | None = None
    limits = httpx.Limits(max_connections=max(args.concurrency, 1) + 2)
    try:
        spawned = time.perf_counter()
        proc = start_server(Path(args.onestack_cmd), port, data_dir, password)
        async with httpx.AsyncClient(
            base_url=run_info.base_url,
            timeout=httpx.Timeout(REQUEST_TIMEOUT),
            limits=limits,
            trust_env=False,
        ) as client:
            try:
                token, project_id = await wait_for_token(
                    client, proc, password, args.startup_timeout
                )
            except RuntimeError as exc:
                log = (data_dir / "onestack-up.log").read_text(errors="replace")[-2000:]
                run_info.setup_error = f"{exc}\n--- end of the server log ---\n{log}"
                return
            run_info.startup_s = time.perf_counter() - spawned
            run_info.rss_start_mib = kib_to_mib(proc_status(proc.pid).get("VmRSS"))
            client.headers["X-Auth-Token"] = token
            expect(
                await client.put(
                    f"/network/v2.0/quotas/{project_id}", json={"quota": {"port": -1}}
                ),
                200,
                "lift the port quota",
            )
            plan = [(args.ports, args.concurrency), (args.baseline_ports, 1)]
            for number, (ports, concurrency) in enumerate(plan):
                if ports <= 0:
                    continue
                phase = Phase(ports=ports, concurrency=concurrency)
                phase.network_id = await make_network(client, f"bench-{number}")
                run_info.phases.append(phase)
                await create_ports(client, phase, proc.pid)
                await verify(client, phase)
            status = proc_status(proc.pid)
            run_info.rss_end_mib = kib_to_mib(status.get("VmRSS"))
            run_info.hwm_mib = kib_to_mib(status.get("VmHWM"))
            run_info.threads = int(status["Threads"]) if "Threads" in status else None
            await remove_data_plane(client, run_info.phases, args.concurrency)
    except RuntimeError as exc:
        run_info.setup_error = str(exc)
    finally:
        if proc is not None:
            run_info.stop_s, run_info.stop_signal = stop_server(proc)
        if args.keep_data:
            print(f"data dir kept: {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def drift(phase: Phase) -> str:
    """Median latency of the first and of the last tenth of the creates (as the net fills)."""
    tenth = phase.ok // 10
    if tenth < 2:
        return "-"
    first = percentile(sorted(phase.latencies_ms[:tenth]), 50)
    last = percentile(sorted(phase.latencies_ms[-tenth:]), 50)
    return f"{_num(first)} / {_num(last)}"


def _git(*argv: str) -> str:
    out = subprocess.run(["git", *argv], cwd=REPO_DIR, capture_output=True, text=True)
    return out.stdout.strip()


def report(run_info: Run) -> str:
    """The markdown report: one column per phase, then server-wide figures and errors."""
    lines = ["# Network ports: create on one network (Neutron v2.0 API)", ""]
    if run_info.setup_error:
        lines += ["**The run failed before or during setup:**", "", "```"]
        lines += [run_info.setup_error, "```", ""]
    phases = run_info.phases
    if phases:
        head = [f"{p.ports:,} ports, concurrency {p.concurrency}" for p in phases]
        lines += ["| metric | " + " | ".join(head) + " |"]
        lines += ["|---|" + "---:|" * len(phases)]

        def row(name: str, cells: list[str]) -> None:
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

        row("created (201)", [f"{p.ok:,} / {p.ports:,}" for p in phases])
        row("errors (non-201)", [str(p.error_count) for p in phases])
        row("wall time, s", [_num(p.wall_s, 2) for p in phases])
        row("ports/s", [_num(p.ok / p.wall_s if p.wall_s else None) for p in phases])
        for name, pct in (("p50", 50), ("p99", 99), ("max", 100)):
            row(f"{name} latency, ms", [_num(percentile(p.sorted_ms, pct)) for p in phases])
        row("p50 of the first / last 10% of creates, ms", [drift(p) for p in phases])
        row(
            "server CPU, s (share of wall)",
            [f"{p.server_cpu_s:.2f} ({100 * p.server_cpu_s / p.wall_s:.0f}%)" for p in phases],
        )
        row("server CPU per port, ms", [_num(1000 * p.server_cpu_s / max(p.ok, 1)) for p in phases])
        row(
            "server main thread (event loop), share of its CPU",
            [
                f"{100 * p.server_main_thread_cpu_s / p.server_cpu_s:.0f}%"
                if p.server_cpu_s
                else "-"
                for p in phases
            ],
        )
        row(
            "load generator CPU (share of wall)",
            [f"{p.client_cpu_s:.2f} s ({100 * p.client_cpu_s / p.wall_s:.0f}%)" for p in phases],
        )
        row(
            "listed on the network (pages)",
            [f"{p.listed:,} ({p.pages} x limit {PAGE_LIMIT})" for p in phases],
        )
        row("listing time, s", [_num(p.list_s, 2) for p in phases])
        row("created but not listed", [str(p.missing) for p in phases])
        row("listed twice", [str(p.listed - p.listed_unique) for p in phases])
        row("fixed IP addresses listed", [f"{p.addresses:,}" for p in phases])
        row(
            "**duplicate addresses** (listing / 201 bodies)",
            [f"**{p.duplicate_addresses}** / {p.duplicate_created_addresses}" for p in phases],
        )
        row("check", ["pass" if p.passed else "**FAIL**" for p in phases])
        lines.append("")
    lines += [
        f"Server: `onestack up` (one process, {run_info.threads or '?'} threads at the end), "
        f"fresh data dir, SQLite. Startup (spawn → first token) {_num(run_info.startup_s, 2)} s; "
        f"VmRSS {_num(run_info.rss_start_mib)} MiB after startup, "
        f"**{_num(run_info.rss_end_mib)} MiB after the run** (peak VmHWM "
        f"{_num(run_info.hwm_mib)} MiB); stopped by {run_info.stop_signal or '-'} in "
        f"{_num(run_info.stop_s, 2)} s.",
        "",
        f"Each phase: a fresh network with one {CIDR} subnet, port quota lifted to -1; "
        "latency is per `POST /network/v2.0/ports` (201s only), measured by one "
        f"`httpx.AsyncClient` (httpx {httpx.__version__}); percentiles are nearest-rank.",
        "",
    ]
    for p in phases:
        if p.errors or p.list_error:
            lines += [f"Errors at concurrency {p.concurrency}:", ""]
            lines += [f"- {count} x `{kind}`" for kind, count in p.errors.most_common()]
            if p.list_error:
                lines.append(f"- listing: `{p.list_error}`")
            lines.append("")
    dirty = " (uncommitted changes in the tree)" if _git("status", "--porcelain") else ""
    load = " ".join(f"{v:.2f}" for v in run_info.load_at_start)
    lines += [
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, commit "
        f"`{_git('rev-parse', '--short', 'HEAD') or '?'}`{dirty}, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average at start {load}.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=1000, help="ports to create (1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="creates in flight (16)")
    parser.add_argument(
        "--baseline-ports", type=int, default=200, help="ports for the concurrency-1 baseline"
    )
    parser.add_argument("--onestack-cmd", default=str(DEFAULT_ONESTACK), help="onestack binary")
    parser.add_argument("--startup-timeout", type=float, default=90.0, help="seconds (90)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.ports < 0 or args.baseline_ports < 0:
        parser.error("--concurrency must be at least 1, --ports and --baseline-ports >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print and save the report; the exit status says whether it passed."""
    args = parse_args(argv)
    if not Path(args.onestack_cmd).exists():
        print(f"{args.onestack_cmd} not found (pip install -e . in the venv)", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    run_info = Run(load_at_start=os.getloadavg())
    asyncio.run(run(args, run_info))
    text = report(run_info)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "network_ports.md").write_text(text)
    if run_info.setup_error and not run_info.phases:
        return 2
    ok = not run_info.setup_error and all(p.passed for p in run_info.phases)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
