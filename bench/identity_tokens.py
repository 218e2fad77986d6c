"""Identity token benchmark: onestack and upstream OpenStack Keystone side by side, one run.

For each target, one after the other (never both at once, so they do not share the
machine's cores):

1. spawn the server in its own process group and poll ``POST /v3/auth/tokens`` every
   50 ms: startup time is spawn -> first 201;
2. token issue (``POST /v3/auth/tokens``, password, project-scoped, expects 201 and an
   ``X-Subject-Token``) and token validation (``GET /v3/auth/tokens`` with an admin
   ``X-Auth-Token`` and an ``X-Subject-Token``, expects 200), each for a fixed duration
   at each concurrency, driven by an ``httpx.AsyncClient``: requests/s, p50/p99 latency
   and errors (any other status, or a transport error, is an error and is reported);
3. resident memory summed over every process of the server's process group (e.g. the
   gunicorn master and its workers) after the load;
4. stop the whole process group.

Output: a markdown table (metric | onestack | upstream Keystone | ratio) on stdout and in
``bench/results/identity_tokens.md``, and every figure in ``identity_tokens.json``
beside it.

    .venv/bin/python bench/identity_tokens.py                   # both targets
    .venv/bin/python bench/identity_tokens.py --only upstream   # Keystone alone
    .venv/bin/python bench/identity_tokens.py --duration 30 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

try:  # run as ``python -m bench.identity_tokens``
    from bench import upstream_keystone
except ImportError:  # run as ``python bench/identity_tokens.py``
    import upstream_keystone  # type: ignore[no-redef]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_ONESTACK = REPO_DIR / ".venv" / "bin" / "onestack"
TARGETS = ("onestack", "upstream")
LABELS = {"onestack": "onestack", "upstream": "upstream Keystone"}
POLL_INTERVAL = 0.05
REQUEST_TIMEOUT = 60.0

_CHILDREN: list[subprocess.Popen[bytes]] = []


# --------------------------------------------------------------------------- results


@dataclass
class PhaseResult:
    """One fixed-duration load phase: one operation at one concurrency."""

    operation: str
    concurrency: int
    duration_s: float
    """Wall time from the first request to the last answer (in-flight tails included)."""
    ok: int
    errors: int
    error_kinds: dict[str, int]
    requests_per_s: float
    """Successful requests per second of ``duration_s``."""
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    server_cpu_s: float
    """CPU seconds (user + system) the server's processes used during the phase."""
    client_cpu_s: float
    """CPU seconds this load generator used during the phase."""

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        """Server CPU per successful request, in ms."""
        return 1000 * self.server_cpu_s / self.ok if self.ok else None


@dataclass
class Memory:
    """Memory of a process group, summed over its processes."""

    processes: int
    rss_mib: float
    """Sum of VmRSS: pages shared between forked workers are counted once per process."""
    pss_mib: float
    """Sum of Pss: shared pages split between their sharers (no double counting)."""
    hwm_mib: float
    """Sum of each process's peak RSS (VmHWM)."""


@dataclass
class TargetResult:
    """Every figure measured for one server."""

    key: str
    label: str
    version: str
    base_url: str = ""
    startup_s: float | None = None
    setup_s: float | None = None
    """Time spent before the spawn (upstream: keystone-manage db_sync/fernet/bootstrap)."""
    phases: list[PhaseResult] = field(default_factory=list)
    memory: Memory | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def phase(self, operation: str, concurrency: int) -> PhaseResult | None:
        """The phase for ``operation`` at ``concurrency``, if it ran."""
        for p in self.phases:
            if p.operation == operation and p.concurrency == concurrency:
                return p
        return None

    @property
    def total_errors(self) -> int:
        """Errors over every load phase."""
        return sum(p.errors for p in self.phases)


# --------------------------------------------------------------------------- /proc


def group_pids(leader: int) -> list[int]:
    """Live pids of the process group ``leader`` leads, plus every descendant of ``leader``."""
    alive: set[int] = set()
    in_group: set[int] = set()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        stat = _read_stat(pid)
        if stat is None:
            continue
        alive.add(pid)
        children.setdefault(int(stat[1]), []).append(pid)
        if int(stat[2]) == leader:
            in_group.add(pid)
    descendants: set[int] = set()
    todo = [leader]
    while todo:
        pid = todo.pop()
        if pid not in descendants:
            descendants.add(pid)
            todo.extend(children.get(pid, []))
    return sorted((in_group | descendants) & alive)


def _read_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state is field 0)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def group_cpu_seconds(leader: int) -> float:
    """User + system CPU seconds used so far by the live processes of ``leader``'s group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_pids(leader):
        stat = _read_stat(pid)
        if stat is not None:
            total += int(stat[11]) + int(stat[12])
    return total / ticks


def group_memory(leader: int) -> Memory:
    """RSS, PSS and peak RSS summed over the processes of ``leader``'s group."""
    rss = pss = hwm = 0
    pids = group_pids(leader)
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return Memory(len(pids), rss / 1024, pss / 1024, hwm / 1024)


# --------------------------------------------------------------------------- load


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


Sender = Callable[[httpx.AsyncClient, int], Awaitable[str | None]]
"""Sends request number n; returns None on success, else a short error kind."""


def issue_sender(tokens_url: str, body: dict[str, Any]) -> Sender:
    """Token issue: POST, expects 201 with an X-Subject-Token header."""
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}

    async def send(client: httpx.AsyncClient, n: int) -> str | None:
        resp = await client.post(tokens_url, content=payload, headers=headers)
        if resp.status_code != 201:
            return f"HTTP {resp.status_code}"
        if not resp.headers.get("X-Subject-Token"):
            return "201 without X-Subject-Token"
        return None

    return send


def validate_sender(tokens_url: str, admin_token: str, subjects: list[str]) -> Sender:
    """Token validation: GET with X-Auth-Token and X-Subject-Token, expects 200."""
    headers = [{"X-Auth-Token": admin_token, "X-Subject-Token": s} for s in subjects]

    async def send(client: httpx.AsyncClient, n: int) -> str | None:
        resp = await client.get(tokens_url, headers=headers[n % len(headers)])
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}"
        return None

    return send


async def drive(
    client: httpx.AsyncClient, send: Sender, concurrency: int, duration: float
) -> tuple[list[float], Counter[str], float]:
    """Run ``concurrency`` closed-loop workers for ``duration`` seconds.

    A worker starts a new request only before the deadline; requests in flight then
    are awaited and counted. Returns (sorted latencies of successes in s, error kinds,
    elapsed wall seconds).
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = started + duration

    async def worker(first: int) -> None:
        n = first
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                failure = await send(client, n)
            except httpx.HTTPError as exc:
                failure = type(exc).__name__
            if failure is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[failure] += 1
            n += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return latencies, errors, elapsed


async def run_phase(
    operation: str,
    send: Sender,
    concurrency: int,
    duration: float,
    warmup: float,
    server_pid: int | None,
) -> PhaseResult:
    """Warm up (discarded), then measure one operation at one concurrency."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(REQUEST_TIMEOUT)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        if warmup > 0:
            await drive(client, send, concurrency, warmup)
        cpu0 = group_cpu_seconds(server_pid) if server_pid else 0.0
        client0 = time.process_time()
        latencies, errors, elapsed = await drive(client, send, concurrency, duration)
        client_cpu = time.process_time() - client0
        server_cpu = (group_cpu_seconds(server_pid) - cpu0) if server_pid else 0.0
    ms = [v * 1000 for v in latencies]
    return PhaseResult(
        operation=operation,
        concurrency=concurrency,
        duration_s=elapsed,
        ok=len(ms),
        errors=sum(errors.values()),
        error_kinds=dict(errors),
        requests_per_s=len(ms) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else None,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
    )


WRK_LATENCY_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk_ms(text: str) -> float | None:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * WRK_LATENCY_UNITS[match.group(2)] if match else None


def wrk_script(operation: str, body: dict[str, Any], admin: str, subjects: list[str]) -> str:
    """The Lua script that makes wrk issue tokens, or validate them in rotation."""
    if operation == "issue":
        return (
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(body)}]]\n"
        )
    tokens = ", ".join(f'"{t}"' for t in subjects)
    return (
        f"local subjects = {{{tokens}}}\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        f'  return wrk.format("GET", nil, {{["X-Auth-Token"] = "{admin}", '
        '["X-Subject-Token"] = subjects[n % #subjects + 1]})\n'
        "end\n"
    )


def _wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split(" [")[0].strip() or "wrk"


def _run_wrk(url: str, script: str, concurrency: int, duration: float) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        return subprocess.run(
            ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{max(duration, 1):.0f}s",
             "--timeout", f"{REQUEST_TIMEOUT:.0f}s", "--latency", "-s", handle.name, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(handle.name)


def run_phase_wrk(
    operation: str,
    url: str,
    script: str,
    concurrency: int,
    duration: float,
    warmup: float,
    server_pid: int | None,
) -> PhaseResult:
    """Like :func:`run_phase`, with wrk (C, a few % of a core) generating the load."""
    if warmup > 0:
        _run_wrk(url, script, concurrency, warmup)
    cpu0 = group_cpu_seconds(server_pid) if server_pid else 0.0
    children0 = os.times()
    out = _run_wrk(url, script, concurrency, duration)
    children1 = os.times()
    server_cpu = (group_cpu_seconds(server_pid) - cpu0) if server_pid else 0.0
    client_cpu = (children1.children_user - children0.children_user) + (
        children1.children_system - children0.children_system
    )
    total = int(re.search(r"(\d+) requests in ([\d.]+)(\w+)", out).group(1))  # type: ignore[union-attr]
    elapsed = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    kinds: dict[str, int] = {}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        kinds["non-2xx"] = int(non_2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if sockets:
        for name, value in zip(
            ("connect", "read", "write", "timeout"), sockets.groups(), strict=True
        ):
            if int(value):
                kinds[name] = int(value)
    errors = sum(kinds.values())
    ok = max(total - errors, 0)
    rate_all = elapsed  # wrk's Requests/sec over the phase
    seconds = total / rate_all if rate_all else duration

    def pct(which: int) -> float | None:
        match = re.search(rf"^\s+{which}%\s+(\S+)\s*$", out, re.MULTILINE)
        return _wrk_ms(match.group(1)) if match else None

    mean = re.search(r"Latency\s+(\S+)", out)
    return PhaseResult(
        operation=operation,
        concurrency=concurrency,
        duration_s=seconds,
        ok=ok,
        errors=errors,
        error_kinds=kinds,
        requests_per_s=ok / seconds if seconds else 0.0,
        p50_ms=pct(50),
        p99_ms=pct(99),
        mean_ms=_wrk_ms(mean.group(1)) if mean else None,
        server_cpu_s=server_cpu,
        client_cpu_s=client_cpu,
    )


async def issue_tokens(tokens_url: str, body: dict[str, Any], count: int) -> list[str]:
    """Issue ``count`` tokens one by one (setup for validation; not measured)."""
    tokens = []
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, trust_env=False) as client:
        for _ in range(count):
            resp = await client.post(tokens_url, json=body)
            if resp.status_code != 201:
                raise RuntimeError(
                    f"could not issue a token: HTTP {resp.status_code} {resp.text[:300]}"
                )
            tokens.append(resp.headers["X-Subject-Token"])
    return tokens


async def measure_load(
    result: TargetResult, server_pid: int | None, args: argparse.Namespace
) -> None:
    """All load phases against ``result.base_url``: issue, then validate, at each concurrency."""
    tokens_url = result.base_url.rstrip("/") + "/auth/tokens"
    body = upstream_keystone.token_request_body(
        args.user, args.password, args.project, args.domain, by_id=args.domain_by_id
    )
    admin_token, *subjects = await issue_tokens(tokens_url, body, 1 + args.subject_tokens)
    senders = {
        "issue": issue_sender(tokens_url, body),
        "validate": validate_sender(tokens_url, admin_token, subjects),
    }
    for operation in ("issue", "validate"):
        for concurrency in args.concurrency:
            _say(f"{result.label}: {operation} at concurrency {concurrency} for {args.duration} s")
            if args.generator == "wrk":
                script = wrk_script(operation, body, admin_token, subjects)
                phase = await asyncio.to_thread(
                    run_phase_wrk,
                    operation,
                    tokens_url,
                    script,
                    concurrency,
                    args.duration,
                    args.warmup,
                    server_pid,
                )
            else:
                phase = await run_phase(
                    operation,
                    senders[operation],
                    concurrency,
                    args.duration,
                    args.warmup,
                    server_pid,
                )
            result.phases.append(phase)
            _say(
                f"  {phase.requests_per_s:.1f}/s, p50 {_fmt(phase.p50_ms, '.1f')} ms, "
                f"p99 {_fmt(phase.p99_ms, '.1f')} ms, {phase.errors} errors"
            )


# --------------------------------------------------------------------------- targets


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _log_tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def onestack_version(cmd: Path) -> str:
    """The onestack package version, asked of the interpreter beside ``cmd``."""
    python = cmd.parent / "python"
    if not python.exists():
        return "unknown"
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('onestack'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def check_onestack(cmd: Path) -> str | None:
    """Why ``onestack up`` cannot be run from ``cmd``, or ``None`` when it can."""
    if not cmd.exists():
        return (
            f"the onestack command is missing: {cmd} does not exist. Install the project "
            f"(.venv/bin/pip install -e .), pass --onestack-cmd, or run "
            f"with --only upstream."
        )
    if not os.access(cmd, os.X_OK):
        return f"{cmd} is not executable"
    probe = subprocess.run([str(cmd), "up", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return (
            f"`{cmd} up` is not available in this checkout yet (exit {probe.returncode}: "
            f"{(probe.stderr or probe.stdout).strip()[-300:]}). Run with --only upstream."
        )
    return None


def bench_onestack(args: argparse.Namespace) -> TargetResult:
    """Start ``onestack up`` on a fresh data dir, measure it, stop it."""
    cmd = Path(args.onestack_cmd)
    result = TargetResult("onestack", LABELS["onestack"], onestack_version(cmd))
    data_dir = Path(tempfile.mkdtemp(prefix="onestack-bench-"))
    log_path = data_dir / "onestack-up.log"
    port = upstream_keystone.free_port()
    result.base_url = f"http://127.0.0.1:{port}/identity/v3"
    argv = [
        str(cmd),
        "up",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--admin-password",
        args.password,
    ]
    result.details = {"command": " ".join([*argv[:-1], "***"]), "data_dir": str(data_dir)}
    _say(f"onestack: starting on port {port}")
    with open(log_path, "wb") as log:
        spawned_at = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(data_dir),
        )
    _CHILDREN.append(proc)
    try:
        body = upstream_keystone.token_request_body(
            args.user, args.password, args.project, args.domain, by_id=args.domain_by_id
        )
        try:
            result.startup_s = upstream_keystone.poll_first_token(
                result.base_url, body, proc, spawned_at, args.startup_timeout, POLL_INTERVAL
            )
        except RuntimeError as exc:
            raise RuntimeError(f"onestack did not come up: {exc}\n{_log_tail(log_path)}") from exc
        _say(f"onestack: first token {result.startup_s:.2f} s after spawn")
        asyncio.run(measure_load(result, proc.pid, args))
        result.memory = group_memory(proc.pid)
    except Exception as exc:
        result.error = str(exc)
        _say(f"onestack: FAILED: {exc}")
    finally:
        upstream_keystone.kill_group(proc, grace=15.0, first=signal.SIGINT)
        _CHILDREN.remove(proc)
        if args.keep_data:
            _say(f"onestack: data and log kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def bench_upstream(args: argparse.Namespace) -> TargetResult:
    """Set up upstream Keystone afresh, start it under gunicorn, measure it, stop it."""
    result = TargetResult("upstream", LABELS["upstream"], "?")
    if args.user != upstream_keystone.ADMIN_USER or args.project != (
        upstream_keystone.ADMIN_PROJECT
    ):
        _say("upstream: bootstrap makes user/project 'admin'; --user/--project are ignored")
    try:
        versions = upstream_keystone.ensure_venv()
        result.version = versions.get("keystone", "?")
        port = upstream_keystone.free_port()
        _say(f"upstream: keystone-manage db_sync, fernet_setup, bootstrap (port {port})")
        setup_s = upstream_keystone.configure(port, args.password)
        _say(f"upstream: starting gunicorn ({args.workers} workers) on port {port}")
        server = upstream_keystone.spawn(port, args.password, args.workers, setup_s)
    except Exception as exc:
        result.error = str(exc)
        _say(f"upstream: FAILED during setup: {exc}")
        return result
    server.versions = versions
    result.base_url = server.base_url
    result.setup_s = setup_s
    result.details = {
        "versions": versions,
        "workers": args.workers,
        "worker_class": "sync",
        "wsgi_app": upstream_keystone.wsgi_app_name(),
        "password_hashing": "Keystone defaults (bcrypt)",
        "config": str(upstream_keystone.UPSTREAM_DIR / "keystone.conf"),
    }
    try:
        result.startup_s = upstream_keystone.wait_ready(server, args.startup_timeout)
        _say(f"upstream: first token {result.startup_s:.2f} s after spawn")
        asyncio.run(measure_load(result, server.pid, args))
        result.memory = group_memory(server.pid)
    except Exception as exc:
        result.error = str(exc)
        _say(f"upstream: FAILED: {exc}")
    finally:
        upstream_keystone.stop(server)
    return result


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "n/a"
    value = ours / theirs
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def markdown(results: dict[str, TargetResult], meta: dict[str, Any]) -> str:
    """The results as markdown: the comparison table, then errors and run notes."""
    ours, theirs = results.get("onestack"), results.get("upstream")

    def head(r: TargetResult | None, key: str) -> str:
        if r is None:
            return f"{LABELS[key]} (not run)"
        return f"{r.label} {r.version}" + (" (FAILED)" if r.error else "")

    lines = [
        "| metric | " + head(ours, "onestack") + " | " + head(theirs, "upstream") + " | ratio |",
        "|---|---:|---:|---:|",
    ]

    def row(
        label: str,
        get: Callable[[TargetResult], float | None],
        spec: str,
        with_ratio: bool = True,
    ) -> None:
        a = get(ours) if ours else None
        b = get(theirs) if theirs else None
        ratio = _ratio(a, b) if with_ratio else ""
        lines.append(f"| {label} | {_fmt(a, spec)} | {_fmt(b, spec)} | {ratio} |")

    def mem(attr: str) -> Callable[[TargetResult], float | None]:
        def get(r: TargetResult) -> float | None:
            return None if r.memory is None else float(getattr(r.memory, attr))

        return get

    def phase_get(op: str, c: int, attr: str) -> Callable[[TargetResult], float | None]:
        def get(r: TargetResult) -> float | None:
            p = r.phase(op, c)
            return None if p is None else getattr(p, attr)

        return get

    row("startup: spawn to first token (s)", lambda r: r.startup_s, ".2f")
    for op, noun in (("issue", "token issue"), ("validate", "token validate")):
        for c in meta["concurrency"]:
            row(f"{noun}/s, concurrency {c}", phase_get(op, c, "requests_per_s"), ".1f")
            row(f"{noun} p50 ms, concurrency {c}", phase_get(op, c, "p50_ms"), ".1f")
            row(f"{noun} p99 ms, concurrency {c}", phase_get(op, c, "p99_ms"), ".1f")
            row(f"{noun} errors, concurrency {c}", phase_get(op, c, "errors"), ".0f", False)
    row("RSS after load, all processes (MiB)", mem("rss_mib"), ".0f")
    row("PSS after load, all processes (MiB)", mem("pss_mib"), ".0f")
    row("server processes", mem("processes"), ".0f", False)
    lines += [
        "",
        "ratio = onestack ÷ upstream Keystone (for /s higher is better; for s, ms and MiB "
        "lower is better).",
        "",
    ]
    for r in results.values():
        if r.error:
            lines.append(f"**{r.label} failed:** `{r.error.splitlines()[0][:300]}`")
        kinds: Counter[str] = Counter()
        for p in r.phases:
            kinds.update(
                {f"{p.operation} c={p.concurrency}: {k}": v for k, v in p.error_kinds.items()}
            )
        if kinds:
            lines.append(
                f"**{r.label} errors:** " + ", ".join(f"{k} x{v}" for k, v in kinds.items())
            )
    lines += [
        f"Run {meta['started']} on {meta['host']}; {meta['duration']} s per phase after a "
        f"{meta['warmup']} s warm-up; validation rotates over {meta['subject_tokens']} "
        f"subject tokens; load generator: {meta['generator']}, same machine; load average at start "
        f"{meta['load_average_at_start'][0]:.2f}.",
    ]
    if theirs and theirs.details.get("versions"):
        v = theirs.details["versions"]
        lines.append(
            f"Upstream: keystone {v.get('keystone')}, gunicorn {v.get('gunicorn')} "
            f"({theirs.details.get('workers')} sync workers), SQLite, Fernet tokens, "
            f"bcrypt password hashing at Keystone's defaults; keystone-manage setup before the "
            f"spawn took {_fmt(theirs.setup_s, '.1f')} s (not in the startup figure)."
        )
    if ours and not ours.error:
        lines.append(
            f"onestack {ours.version} ({meta.get('onestack_commit', '?')}): `onestack up` on a "
            f"fresh data dir (its startup includes creating the database and bootstrapping)."
        )
    cpu_rows = []
    for r in results.values():
        for p in r.phases:
            share = p.client_cpu_s / p.duration_s if p.duration_s else 0.0
            cpu_rows.append(
                f"| {r.label} | {p.operation} | {p.concurrency} | "
                f"{_fmt(p.server_cpu_ms_per_request, '.2f')} | {share:.0%} |"
            )
    if cpu_rows:
        lines += [
            "",
            "| target | operation | concurrency | server CPU ms/request | load-generator CPU |",
            "|---|---|---:|---:|---:|",
            *cpu_rows,
            "",
            "A load-generator CPU near 100% means the client, not the server, set the pace.",
        ]
    return "\n".join(lines) + "\n"


def _git_commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See bench/README.md.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="discarded s per phase (1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], help="levels (1 32)")
    parser.add_argument("--only", choices=TARGETS, help="measure one target only")
    parser.add_argument(
        "--order", choices=["onestack-first", "upstream-first"], default="onestack-first"
    )
    parser.add_argument("--onestack-cmd", default=str(DEFAULT_ONESTACK), help="onestack binary")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for Keystone")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="bench-Admin-pw-1")
    parser.add_argument("--project", default="admin")
    parser.add_argument("--domain", default="Default", help="user and project domain (name)")
    parser.add_argument(
        "--domain-by-id", action="store_true", help="--domain is an id (e.g. default)"
    )
    parser.add_argument("--subject-tokens", type=int, default=8, help="tokens validated (8)")
    parser.add_argument(
        "--generator",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator: wrk (default when installed) or httpx",
    )
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-data", action="store_true", help="keep onestack's data dir")
    args = parser.parse_args(argv)
    if args.duration <= 0 or any(c < 1 for c in args.concurrency) or args.subject_tokens < 1:
        parser.error("--duration, --concurrency and --subject-tokens must be positive")
    return args


def _cleanup_children() -> None:
    for proc in list(_CHILDREN):
        upstream_keystone.kill_group(proc, grace=3.0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every target ran without errors, 1 otherwise."""
    args = parse_args(argv)
    keys = [args.only] if args.only else list(TARGETS)
    if args.order == "upstream-first":
        keys.reverse()
    if "onestack" in keys:
        problem = check_onestack(Path(args.onestack_cmd))
        if problem:
            print(f"identity_tokens: {problem}", file=sys.stderr)
            return 2

    atexit.register(_cleanup_children)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    uvloop_used = False
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        uvloop_used = True

    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.node() or 'host'} ({os.cpu_count()} cores, Python "
        f"{platform.python_version()})",
        "duration": args.duration,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "subject_tokens": args.subject_tokens,
        "httpx": httpx.__version__,
        "generator": (
            _wrk_version() if args.generator == "wrk" else f"httpx {httpx.__version__} AsyncClient"
        ),
        "uvloop": uvloop_used,
        "targets": keys,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "onestack_commit": _git_commit(),
    }
    results: dict[str, TargetResult] = {}
    for key in keys:
        results[key] = bench_onestack(args) if key == "onestack" else bench_upstream(args)

    text = markdown(results, meta)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    md_path = args.results_dir / "identity_tokens.md"
    json_path = args.results_dir / "identity_tokens.json"
    md_path.write_text("# Identity tokens: onestack vs upstream Keystone\n\n" + text)
    payload = {
        "meta": meta,
        "targets": {
            k: {
                **asdict(r),
                "phases": [
                    {**asdict(p), "server_cpu_ms_per_request": p.server_cpu_ms_per_request}
                    for p in r.phases
                ],
            }
            for k, r in results.items()
        },
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    _say(f"wrote {md_path} and {json_path}")
    failed = any(r.error or r.total_errors for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
