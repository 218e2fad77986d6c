"""Image data throughput: upload and download of a 1 GiB image beside the disk's own rate.

In one run, on the same data directory: ``dd`` writes the same amount with
``conv=fsync`` and reads it back (page cache dropped first when root), then a
real ``onestack up`` receives the image over HTTP (streamed, hashed, inspected,
fsynced) and serves it back. Reported as MB/s and as a ratio to dd.

    python bench/image_throughput.py [--size-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
ONESTACK = Path(sys.executable).parent / "onestack"
CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drop_caches() -> bool:
    """Empty the page cache so reads come from the disk; only possible as root."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def dd_rate(command: list[str]) -> float:
    """MB/s that dd reports for ``command``."""
    out = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    seconds = float(re.search(r"copied, ([\d.]+) s", out).group(1))  # type: ignore[union-attr]
    copied = int(re.search(r"^(\d+) bytes", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return copied / seconds / 1e6


def curl(*args: str) -> tuple[float, str]:
    """Run curl (a C client, like dd) for one transfer; returns (seconds, HTTP status)."""
    out = subprocess.run(
        ["curl", "-s", "-w", "%{time_total} %{http_code}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[-2]), out[-1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_token(auth_url: str, password: str) -> str:
    body = {
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{auth_url}/auth/tokens", json=body)
            if response.status_code == 201:
                return response.headers["x-subject-token"]
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("onestack did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-dir", type=Path, help="where onestack and dd write (a temp dir)")
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    work = Path(tempfile.mkdtemp(prefix="onestack-imgbench-", dir=args.data_dir))
    source = work / "source.bin"
    block = os.urandom(CHUNK)
    with source.open("wb") as handle:
        for _ in range(args.size_mib):
            handle.write(block)
    expected = hashlib.md5()
    with source.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            expected.update(chunk)

    probe = work / "dd.probe"
    dd_write = dd_rate(
        ["dd", "if=/dev/zero", f"of={probe}", "bs=4M", f"count={args.size_mib // 4}", "conv=fsync"]
    )
    cold = drop_caches()
    dd_read = dd_rate(["dd", f"if={probe}", "of=/dev/null", "bs=4M"])
    probe.unlink()

    port = free_port()
    password = "bench-admin"
    data_dir = work / "onestack"
    login = ["--admin-password", password]
    process = subprocess.Popen(
        [str(ONESTACK), "up", "--port", str(port), "--data-dir", str(data_dir), *login],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        token = wait_for_token(f"{base}/identity/v3", password)
        headers = {"X-Auth-Token": token}
        image = httpx.post(
            f"{base}/image/v2/images",
            json={"name": "bench", "disk_format": "raw", "container_format": "bare"},
            headers=headers,
        ).json()
        url = f"{base}/image/v2/images/{image['id']}/file"
        cpu_start = cpu_seconds(process.pid)
        upload_s, status = curl("-T", str(source), "-H", "Content-Type: application/octet-stream",
                                "-H", f"X-Auth-Token: {token}", url)  # fmt: skip
        assert status == "204", f"upload answered {status}"
        upload_cpu = cpu_seconds(process.pid) - cpu_start
        drop_caches()
        cpu_start = cpu_seconds(process.pid)
        download_s, status = curl("-o", "/dev/null", "-H", f"X-Auth-Token: {token}", url)
        download_cpu = cpu_seconds(process.pid) - cpu_start
        assert status == "200", f"download answered {status}"
        stored = httpx.get(f"{base}/image/v2/images/{image['id']}", headers=headers).json()
        assert stored["checksum"] == expected.hexdigest(), "the stored image differs"
        assert stored["size"] == size
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    upload = size / upload_s / 1e6
    download = size / download_s / 1e6
    gib = size / (1 << 30)
    table = "\n".join(
        [
            f"# Image throughput, {args.size_mib} MiB image",
            "",
            "| operation | onestack MB/s | dd MB/s (same dir) | ratio | server CPU s/GiB |",
            "|---|---:|---:|---:|---:|",
            f"| upload (PUT /file: hash, inspect, fsync) vs dd write conv=fsync | {upload:.0f} "
            f"| {dd_write:.0f} | {upload / dd_write:.0%} | {upload_cpu / gib:.2f} |",
            f"| download (GET /file) vs dd read | {download:.0f} | {dd_read:.0f} "
            f"| {download / dd_read:.0%} | {download_cpu / gib:.2f} |",
            "",
            f"Reads {'from the disk (page cache dropped)' if cold else 'may come from page cache'}"
            "; curl is the client, on the same machine as the server. Server CPU: the "
            "onestack process's user + system time during the transfer (steadier than "
            "MB/s on a shared machine).",
        ]
    )
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "image_throughput.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
