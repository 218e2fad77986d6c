"""What the block storage benchmarks share: a real ``onestack up`` on a temporary data
directory, an admin token, the volume endpoint, polling, CPU and memory of the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
ONESTACK = REPO_DIR / ".venv" / "bin" / "onestack"
PASSWORD = "bench-admin"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A running ``onestack up`` and how to reach its block storage API as admin."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    base: str
    token: str
    volume_url: str

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token, "OpenStack-API-Version": "volume 3.60"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token(base: str) -> httpx.Response | None:
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
    }}  # fmt: skip
    try:
        response = httpx.post(f"{base}/identity/v3/auth/tokens", json=body, timeout=10)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 201 else None


@contextlib.contextmanager
def onestack_up(env: dict[str, str] | None = None) -> Iterator[Server]:
    """A fresh all-in-one cloud for the duration of the block; its data is removed after."""
    data_dir = Path(tempfile.mkdtemp(prefix="onestack-volume-bench-"))
    port = free_port()
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(ONESTACK), "up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", PASSWORD],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        issued = None
        while issued is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"onestack did not start; see {log.name}")
            time.sleep(0.1)
            issued = _token(base)
        catalog = issued.json()["token"]["catalog"]
        [storage] = [s for s in catalog if s["type"] == "block-storage"]
        url = next(e["url"] for e in storage["endpoints"] if e["interface"] == "public")
        yield Server(process, data_dir, base, issued.headers["x-subject-token"], url)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


async def wait_status(
    client: httpx.AsyncClient, server: Server, kind: str, ident: str, wanted: str,
    interval: float = 0.05, timeout: float = 600.0,
) -> dict[str, Any]:  # fmt: skip
    """Poll ``/<kind>s/{id}`` until ``wanted``; RuntimeError on an error status."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(
            f"{server.volume_url}/{kind}s/{ident}", headers=server.headers()
        )
        body: dict[str, Any] = response.json()[kind]
        if body["status"] == wanted:
            return body
        if body["status"].startswith("error") or time.monotonic() > deadline:
            raise RuntimeError(f"{kind} {ident} is {body['status']}")
        await asyncio.sleep(interval)


async def wait_gone(
    client: httpx.AsyncClient, server: Server, kind: str, ident: str, interval: float = 0.05
) -> None:
    while True:
        response = await client.get(
            f"{server.volume_url}/{kind}s/{ident}", headers=server.headers()
        )
        if response.status_code == 404:
            return
        if response.json().get(kind, {}).get("status", "").startswith("error"):
            raise RuntimeError(f"{kind} {ident} failed to delete")
        await asyncio.sleep(interval)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def write_results(name: str, text: str) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(text)
    return path


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "?"
