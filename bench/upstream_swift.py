"""Run upstream OpenStack Swift (its PyPI package ``swift``) as a one-node cluster for benchmarks.

Everything lives under ``bench/.upstream/`` (gitignored): the virtualenv
``swift-venv/`` and, per run, ``swift-run/`` with swift.conf, the rings (built
with ``swift-ring-builder``: partition power 10, 3 replicas, four devices d1..d4
in four zones, as Swift's all-in-one), the four device directories, the server
configs and logs. The proxy (tempauth, memcache), account, container and object
servers listen on free ports of 127.0.0.1 with one worker each, as the
Swift-all-in-one guide sets them up. memcached (Debian's package) runs on a free
loopback port for the proxy's token and info cache.

Swift reads ``/etc/swift/swift.conf`` by default; to leave the host alone each
server is started through a small launcher that points Swift at this run's
directory (``set_swift_dir``) before the server starts.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
UPSTREAM_DIR = BENCH_DIR / ".upstream"
VENV_DIR = UPSTREAM_DIR / "swift-venv"
RUN_DIR = UPSTREAM_DIR / "swift-run"
USER, KEY = "bench:tester", "testing"
PROXY_PIPELINE = " ".join(
    [
        "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl",
        "slo dlo versioned_writes copy container-quotas account-quotas tempauth proxy-logging",
        "proxy-server",
    ]
)

LAUNCHER = """
import sys
from swift.common import utils
utils.set_swift_dir(sys.argv[1])
from swift.common.wsgi import run_wsgi
conf_file, options = utils.parse_options(test_args=[sys.argv[2]])
sys.exit(run_wsgi(conf_file, sys.argv[3], **options))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_venv() -> None:
    """Create the Swift virtualenv on first use (needs liberasurecode for pyeclib)."""
    if (VENV_DIR / "bin" / "swift-ring-builder").exists():
        return
    if shutil.which("apt-get") and not Path("/usr/include/erasurecode.h").exists():
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "liberasurecode-dev"],
            check=False,
            capture_output=True,
        )
    subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], check=True)
    pip = str(VENV_DIR / "bin" / "pip")
    subprocess.run([pip, "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "-q", "swift"], check=True)


def swift_version() -> str:
    done = subprocess.run(
        [
            str(VENV_DIR / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('swift'))",
        ],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def ensure_memcached() -> str:
    found = shutil.which("memcached") or "/usr/bin/memcached"
    if not Path(found).exists() and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "memcached"], check=False, capture_output=True
        )
        # The package starts a system-wide daemon; the benchmark runs its own.
        subprocess.run(["service", "memcached", "stop"], check=False, capture_output=True)
    return found


@dataclass
class SwiftCluster:
    proxy_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}/auth/v1.0"

    def token(self) -> tuple[str, str]:
        """(storage URL, token) from tempauth."""
        response = httpx.get(self.auth_url, headers={"X-Auth-User": USER, "X-Auth-Key": KEY})
        response.raise_for_status()
        return response.headers["x-storage-url"], response.headers["x-auth-token"]


def _conf(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def start() -> SwiftCluster:
    """Configure a fresh one-node, four-device, three-replica cluster and start it."""
    ensure_venv()
    memcached = ensure_memcached()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    devices = RUN_DIR / "srv"
    for number in range(1, 5):
        (devices / f"d{number}").mkdir(parents=True)
    ports = {name: free_port() for name in ("proxy", "account", "container", "object", "memcache")}
    _conf(
        RUN_DIR / "swift.conf",
        """
[swift-hash]
swift_hash_path_suffix = onestack-bench
swift_hash_path_prefix = onestack-bench
[storage-policy:0]
name = Policy-0
default = yes
""",
    )
    builder = str(VENV_DIR / "bin" / "swift-ring-builder")
    for kind in ("account", "container", "object"):
        ring = str(RUN_DIR / f"{kind}.builder")
        subprocess.run([builder, ring, "create", "10", "3", "0"], check=True, capture_output=True)
        for number in range(1, 5):
            device = f"r1z{number}-127.0.0.1:{ports[kind]}/d{number}"
            subprocess.run([builder, ring, "add", device, "100"], check=True, capture_output=True)
        subprocess.run([builder, ring, "rebalance"], check=False, capture_output=True)
    common = f"""
[DEFAULT]
bind_ip = 127.0.0.1
workers = 1
user = {pwd.getpwuid(os.getuid()).pw_name}
swift_dir = {RUN_DIR}
devices = {devices}
mount_check = false
disable_fallocate = true
log_name = swift
log_facility = LOG_LOCAL0
log_level = WARNING
"""
    for kind in ("account", "container", "object"):
        _conf(
            RUN_DIR / f"{kind}-server.conf",
            f"""
{common}
bind_port = {ports[kind]}

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}

[{kind}-replicator]
[{kind}-auditor]
[{kind}-updater]
""",
        )
    _conf(
        RUN_DIR / "proxy-server.conf",
        f"""
{common}
bind_port = {ports["proxy"]}

[pipeline:main]
pipeline = {PROXY_PIPELINE}

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_bench_tester = {KEY} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{ports["memcache"]}

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
[filter:copy]
use = egg:swift#copy
[filter:container-quotas]
use = egg:swift#container_quotas
[filter:account-quotas]
use = egg:swift#account_quotas
""",
    )
    launcher = _conf(RUN_DIR / "launch.py", LAUNCHER)
    cluster = SwiftCluster(ports["proxy"])
    cluster.processes.append(
        subprocess.Popen(
            [
                memcached,
                "-l",
                "127.0.0.1",
                "-p",
                str(ports["memcache"]),
                "-U",
                "0",
                "-m",
                "64",
                "-u",
                pwd.getpwuid(os.getuid()).pw_name,
            ],
            start_new_session=True,
        )
    )
    python = str(VENV_DIR / "bin" / "python")
    for kind in ("account", "container", "object", "proxy"):
        log = open(RUN_DIR / f"{kind}.log", "wb")  # noqa: SIM115 - the server's lifetime
        cluster.processes.append(
            subprocess.Popen(
                [
                    python,
                    str(launcher),
                    str(RUN_DIR),
                    str(RUN_DIR / f"{kind}-server.conf"),
                    f"{kind}-server",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=RUN_DIR,
            )
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            cluster.token()
            return cluster
        except (httpx.HTTPError, KeyError):
            time.sleep(0.2)
    stop(cluster)
    logs = (RUN_DIR / "proxy.log").read_text()[-2000:]
    raise RuntimeError(f"upstream Swift did not start:\n{logs}")


def server_pids(cluster: SwiftCluster) -> list[int]:
    """Every process of the cluster (servers and their workers)."""
    pids = []
    for process in cluster.processes:
        try:
            group = os.getpgid(process.pid)
        except ProcessLookupError:
            continue
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == group:
                        pids.append(int(entry))
                except ProcessLookupError:
                    pass
    return pids


def stop(cluster: SwiftCluster) -> None:
    for process in cluster.processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in cluster.processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__":
    running = start()
    print(f"upstream Swift {swift_version()} at {running.auth_url} ({USER} / {KEY})")
    try:
        signal.pause()
    finally:
        stop(running)
