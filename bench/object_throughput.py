"""Object storage throughput beside upstream Swift and the disk, in one run.

For each target in turn — onestack (``onestack up``: one node, four devices,
three replicas) and upstream Swift from PyPI (one node, four devices, three
replicas, see ``upstream_swift.py``) — on this machine:

* 4 KiB objects: PUT (new names) then GET (256 objects written beforehand), each
  for ``--seconds`` at concurrency 1 and 32 (objects/s; wrk, a C load generator
  that costs a few % of a core, so the servers get the CPU);
* 64 MiB objects: ``--large-count`` PUTs then GETs with curl (MB/s);

then the disk itself: three 64 MiB files written at once with ``dd
conv=fsync`` (what three replicas cost), reported as MB/s of one copy.

    python bench/object_throughput.py [--only onestack|upstream] [--seconds 10]

Results: a markdown table on stdout and in ``bench/results/object_throughput.md``,
figures in ``bench/results/object_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ONESTACK = Path(sys.executable).parent / "onestack"
SMALL = os.urandom(4096)
LARGE_MIB = 64
sys.path.insert(0, str(BENCH))

import upstream_swift  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Target:
    """A running object store: its storage URL, a token, and how to stop it."""

    def __init__(self, name: str, url: str, token: str, stop: Callable[[], None], data: Path):
        self.name, self.url, self.token, self.stop, self.data = name, url, token, stop, data


def start_onestack(root: Path) -> Target:
    port = free_port()
    data = root / "onestack"
    process = subprocess.Popen(
        [
            str(ONESTACK),
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--admin-password",
            "bench",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    auth = f"http://127.0.0.1:{port}/identity/v3/auth/tokens"
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"id": "default"}, "password": "bench"}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
    deadline = time.monotonic() + 90
    while True:
        try:
            response = httpx.post(auth, json=body)
            if response.status_code == 201:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("onestack did not start")
        time.sleep(0.1)
    token = response.headers["x-subject-token"]
    catalog = response.json()["token"]["catalog"]
    url = next(
        e["url"]
        for s in catalog
        if s["type"] == "object-store"
        for e in s["endpoints"]
        if e["interface"] == "public"
    )

    def stop() -> None:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)

    return Target("onestack", url, token, stop, data)


def start_upstream(root: Path) -> Target:
    cluster = upstream_swift.start()
    url, token = cluster.token()
    return Target(
        "upstream Swift", url, token, lambda: upstream_swift.stop(cluster), upstream_swift.RUN_DIR
    )


WRK_PUT = """
local counter = 0
local thread_id = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
end
function request()
  counter = counter + 1
  return wrk.format("PUT", "%(path)s/%(prefix)s-" .. id .. "-" .. counter,
                    {["X-Auth-Token"] = "%(token)s"}, body)
end
body = string.rep("x", 4096)
"""

WRK_GET = """
local counter = 0
function request()
  counter = counter + 1
  return wrk.format("GET", "%(path)s/seed-" .. (counter %% %(count)d),
                    {["X-Auth-Token"] = "%(token)s"})
end
"""


def wrk(url: str, script: str, concurrency: int, seconds: float) -> tuple[float, int]:
    """Requests/s of successful answers and the error count, as wrk measured them."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(concurrency, 2)}",
                f"-c{concurrency}",
                f"-d{seconds:.0f}s",
                "--timeout",
                "60s",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if sockets:
        errors += sum(int(v) for v in sockets.groups())
    return rate * (total - errors) / total if total else 0.0, errors


def seed(target: Target, count: int) -> None:
    """Objects the GET phases read (written before, not measured)."""
    with httpx.Client(timeout=60) as client:
        for number in range(count):
            response = client.put(
                f"{target.url}/bench/seed-{number}",
                content=SMALL,
                headers={"X-Auth-Token": target.token},
            )
            response.raise_for_status()


def curl(*args: str) -> tuple[float, str]:
    out = subprocess.run(
        ["curl", "-s", "-w", "%{time_total} %{http_code}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[-2]), out[-1]


def large_phase(target: Target, source: Path, count: int) -> tuple[float, float, int]:
    """MB/s of PUTs and GETs of ``count`` 64 MiB objects (curl, one at a time)."""
    auth = f"X-Auth-Token: {target.token}"
    size = source.stat().st_size
    put_time = get_time = 0.0
    errors = 0
    for number in range(count):
        seconds, status = curl(
            "-o", "/dev/null", "-T", str(source), "-H", auth, f"{target.url}/bench/large-{number}"
        )
        put_time += seconds
        errors += status != "201"
    for number in range(count):
        seconds, status = curl("-o", "/dev/null", "-H", auth, f"{target.url}/bench/large-{number}")
        get_time += seconds
        errors += status != "200"
    return size * count / put_time / 1e6, size * count / get_time / 1e6, errors


def disk_three_copies(directory: Path, source: Path) -> float:
    """MB/s of one copy when three copies of the 64 MiB random file are written at once, each
    fsync'ed (random bytes: a virtual disk may store zeros for free)."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            ["dd", f"if={source}", f"of={directory / f'copy{n}'}", "bs=1M", "conv=fsync"],
            stderr=subprocess.DEVNULL,
        )
        for n in range(3)
    ]
    for run in runs:
        run.wait()
    elapsed = time.monotonic() - started
    for n in range(3):
        (directory / f"copy{n}").unlink()
    return source.stat().st_size / elapsed / 1e6


def measure(
    target: Target, seconds: float, large_count: int, source: Path, *, small: bool = True
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:  # the storage servers may still be starting behind the proxy
        made = httpx.put(f"{target.url}/bench", headers={"X-Auth-Token": target.token})
        if made.is_success or time.monotonic() > deadline:
            made.raise_for_status()
            break
        time.sleep(0.5)
    seeded = 256
    seed(target, seeded)
    path = "/" + target.url.split("/", 3)[3] + "/bench"
    fields = {"path": path, "token": target.token, "count": seeded}
    figures: dict[str, Any] = {"errors": 0}
    for concurrency in (1, 32) if small else ():
        put_script = WRK_PUT % {**fields, "prefix": f"c{concurrency}"}
        rate, errors = wrk(target.url, put_script, concurrency, seconds)
        figures[f"small_put_c{concurrency}"] = rate
        figures["errors"] += errors
        rate, errors = wrk(target.url, WRK_GET % fields, concurrency, seconds)
        figures[f"small_get_c{concurrency}"] = rate
        figures["errors"] += errors
    disk_before = disk_three_copies(target.data / "disk-probe", source)
    put_rate, get_rate, errors = large_phase(target, source, large_count)
    disk_after = disk_three_copies(target.data / "disk-probe", source)
    figures["large_put_mbps"], figures["large_get_mbps"] = put_rate, get_rate
    # The disk's rate around the large uploads, on the same file system.
    figures["disk_mbps"] = (disk_before + disk_after) / 2
    figures["errors"] += errors
    return figures


def table(results: dict[str, dict[str, Any]], meta: dict[str, str]) -> str:
    ours, theirs = results.get("onestack", {}), results.get("upstream Swift", {})
    rows = [
        ("PUT 4 KiB, concurrency 1 (objects/s)", "small_put_c1"),
        ("GET 4 KiB, concurrency 1 (objects/s)", "small_get_c1"),
        ("PUT 4 KiB, concurrency 32 (objects/s)", "small_put_c32"),
        ("GET 4 KiB, concurrency 32 (objects/s)", "small_get_c32"),
        ("PUT 64 MiB (MB/s)", "large_put_mbps"),
        ("GET 64 MiB (MB/s)", "large_get_mbps"),
    ]
    lines = ["| figure | onestack | upstream Swift | onestack / upstream |", "|---|---|---|---|"]
    for label, key in rows:
        a, b = ours.get(key), theirs.get(key)
        ratio = f"{a / b:.2f}x" if a and b else "—"
        lines.append(
            f"| {label} | {a:.1f} | {b:.1f} | {ratio} |"
            if a and b
            else f"| {label} | {a or 0:.1f} | {b or 0:.1f} | {ratio} |"
        )
    lines.append(
        "| disk: three 64 MiB copies with fsync around each target's large PUTs "
        f"(MB/s of one copy) | {ours.get('disk_mbps', 0):.1f} | "
        f"{theirs.get('disk_mbps', 0):.1f} | |"
    )
    shares = [
        f"{f['large_put_mbps'] / f['disk_mbps']:.0%}" if f.get("disk_mbps") else "—"
        for f in (ours, theirs)
    ]
    lines.append(f"| 64 MiB PUT / disk limit for three copies | {shares[0]} | {shares[1]} | |")
    lines.append("")
    lines.append(", ".join(f"{k}: {v}" for k, v in meta.items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["onestack", "upstream"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--large-count", type=int, default=3)
    parser.add_argument(
        "--large-only", action="store_true", help="only the 64 MiB phase (no wrk needed)"
    )
    args = parser.parse_args()
    root = Path(
        tempfile.mkdtemp(
            prefix="object-bench-",
            dir=BENCH / ".upstream" if (BENCH / ".upstream").exists() else None,
        )
    )
    source = root / "large.bin"
    with open(source, "wb") as handle:
        for _ in range(LARGE_MIB):
            handle.write(os.urandom(1 << 20))
    results: dict[str, dict[str, Any]] = {}
    starters = {"onestack": start_onestack, "upstream": start_upstream}
    try:
        for name, starter in starters.items():
            if args.only and args.only != name:
                continue
            target = starter(root)
            try:
                results[target.name] = measure(
                    target, args.seconds, args.large_count, source, small=not args.large_only
                )
            finally:
                target.stop()
            print(target.name, json.dumps(results[target.name]), file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "cpus": str(os.cpu_count()),
        "load at start": f"{os.getloadavg()[0]:.2f}",
        "seconds per small phase": f"{args.seconds:g}",
    }
    if "upstream Swift" in results:
        meta["upstream"] = f"swift {upstream_swift.swift_version()}"
    report = table(results, meta)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "object_throughput.md").write_text(report + "\n")
    (RESULTS / "object_throughput.json").write_text(
        json.dumps({"results": results, **meta}, indent=2)
    )
    failed = any(r.get("errors") for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
