"""Run upstream OpenStack Placement (from its PyPI package) for side-by-side benchmarks.

Everything lives under ``bench/.upstream/`` (gitignored): ``placement-venv/`` with the
versions pinned in ``bench/upstream-placement-requirements.txt``, and ``placement-run/``
(configuration, SQLite database, gunicorn settings and log), made anew on every
:func:`start`. Placement runs as upstream deploys it: its WSGI application
(``placement.wsgi.api:application``) under gunicorn with sync workers, here with
``auth_strategy = noauth2`` (the token ``admin`` is an admin) so that no Keystone is needed;
the database is made with ``placement-manage db sync``.

    server = start(workers=2)   # server.url is http://127.0.0.1:PORT
    ...
    stop(server)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
UPSTREAM_DIR = BENCH_DIR / ".upstream"
VENV_DIR = UPSTREAM_DIR / "placement-venv"
RUN_DIR = UPSTREAM_DIR / "placement-run"
REQUIREMENTS = BENCH_DIR / "upstream-placement-requirements.txt"
STAMP = VENV_DIR / ".requirements.sha256"


@dataclass
class UpstreamPlacement:
    process: subprocess.Popen[bytes]
    url: str
    startup_seconds: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_venv() -> None:
    """Create (or refresh, when the pinned requirements change) the upstream venv."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    print("installing upstream placement into bench/.upstream/placement-venv …", file=sys.stderr)
    if not (VENV_DIR / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    pip = [str(VENV_DIR / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    STAMP.write_text(digest)


def start(workers: int = 2, timeout: float = 120.0) -> UpstreamPlacement:
    """Configure a fresh database, spawn gunicorn, wait until the API answers."""
    ensure_venv()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    (RUN_DIR / "placement.conf").write_text(
        "[DEFAULT]\ndebug = False\n[api]\nauth_strategy = noauth2\n"
        f"[placement_database]\nconnection = sqlite:///{RUN_DIR / 'placement.sqlite'}\n"
    )
    port = free_port()
    (RUN_DIR / "gunicorn.conf.py").write_text(
        f"wsgi_app = 'placement.wsgi.api:application'\nbind = '127.0.0.1:{port}'\n"
        f"workers = {workers}\ncontrol_socket_disable = True\n"
    )
    env = {**os.environ, "OS_PLACEMENT_CONFIG_DIR": str(RUN_DIR)}
    bin_dir = VENV_DIR / "bin"
    subprocess.run(
        [str(bin_dir / "placement-manage"), "--config-file", str(RUN_DIR / "placement.conf"),
         "db", "sync"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    started = time.monotonic()
    log = open(RUN_DIR / "gunicorn.log", "wb")  # noqa: SIM115 - open for the server's life
    process = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "-c", str(RUN_DIR / "gunicorn.conf.py")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(
                f"upstream placement exited: {(RUN_DIR / 'gunicorn.log').read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/", timeout=2).status_code == 200:
                return UpstreamPlacement(process, url, time.monotonic() - started)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(UpstreamPlacement(process, url, 0.0))
    raise RuntimeError("upstream placement did not answer in time")


def stop(server: UpstreamPlacement, grace: float = 10.0) -> None:
    """SIGTERM to gunicorn's process group, SIGKILL after ``grace`` seconds."""
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()


def version() -> str:
    found = subprocess.run(
        [str(VENV_DIR / "bin" / "pip"), "show", "openstack-placement"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for line in found.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "?"
