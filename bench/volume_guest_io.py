"""A volume in a real guest: attach and detach latency, sequential I/O inside the guest
beside the same I/O on the host's file.

Starts ``onestack up`` as root (qemu driver, no network data plane), boots one guest from
the image ``onestack guest-image build`` makes, creates a 1 GiB volume and attaches it
through the compute API. Times: request → volume ``in-use`` → the guest lists ``vdb``, and
for the detach request → ``available`` → ``vdb`` gone. Inside the guest (typed into its
serial console, timed with ``/proc/uptime``): ``dd`` of N MiB of zeros onto /dev/vdb with
``conv=fsync``, then (page cache dropped) the same read back. On the host: the same two
``dd`` runs on a file in the volume backend's directory (``iflag=direct`` for the read).

    sudo .venv/bin/python bench/volume_guest_io.py --mib 256
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onestack.compute.drivers.qemu.machine import Machine
from onestack.compute.guest_image import MARKER, build

ADMIN_PASSWORD = "bench-admin"
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results"
TIMED = re.compile(r"took-([0-9.]+)-([0-9.]+)-end")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cloud:
    """``onestack up`` in a subprocess and an admin session on its APIs."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = (data_dir / "onestack.out").open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "onestack"), "up", "--port", str(self.port), "--data-dir", str(data_dir),
             "--admin-password", ADMIN_PASSWORD],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "ONESTACK_NETWORK__DRIVER": "noop"},
        )  # fmt: skip
        self.http = httpx.Client(timeout=60)
        self.project = ""

    def start(self) -> None:
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}  # fmt: skip
        for _ in range(600):
            try:
                answer = self.http.post(f"{self.base}/identity/v3/auth/tokens", json=body)
                if answer.status_code == 201:
                    self.http.headers["X-Auth-Token"] = answer.headers["X-Subject-Token"]
                    self.http.headers["OpenStack-API-Version"] = "compute 2.79, volume 3.67"
                    self.project = answer.json()["token"]["project"]["id"]
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("onestack did not come up")
        for _ in range(600):
            hypervisors = self.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]
            if any(h["state"] == "up" and h["hypervisor_type"] == "QEMU" for h in hypervisors):
                return
            time.sleep(0.2)
        raise SystemExit("no QEMU host came up")

    def get(self, path: str) -> Any:
        answer = self.http.get(f"{self.base}{path}")
        answer.raise_for_status()
        return answer.json()

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, f"{self.base}{path}", **kwargs)
        if answer.status_code >= 400:
            raise SystemExit(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def volume_status(self, volume: str, status: str) -> float:
        started = time.monotonic()
        while self.get(f"/volume/v3/volumes/{volume}")["volume"]["status"] != status:
            if time.monotonic() - started > 300:
                raise SystemExit(f"volume {volume} never became {status}")
            time.sleep(0.05)
        return time.monotonic()

    def stop(self) -> None:
        os.killpg(self.process.pid, 2)
        self.process.wait(60)
        self.log.close()


def serial(cloud: Cloud, server: str, command: str, expect: str, timeout: float = 600) -> str:
    """Type ``command`` into the guest's shell; the output up to the ``expect`` pattern."""
    (directory,) = [p.resolve() for p in (cloud.data_dir / "compute").glob(f"*/instances/{server}")]
    pattern = re.compile(expect)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(Machine(directory).serial_socket))
        sock.settimeout(0.2)
        sock.sendall(b"\n" + command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                seen += sock.recv(4096)
            found = pattern.search(seen.decode(errors="replace"))
            if found:
                return found.group(0)
    raise SystemExit(f"no {expect!r} after {command!r}: {seen.decode(errors='replace')[-800:]}")


def until_guest(cloud: Cloud, server: str, command: str, expect: str) -> float:
    """When the guest's output of ``command`` first shows ``expect`` (tried every ~2 s)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            serial(cloud, server, command, expect, timeout=2)
            return time.monotonic()
        except SystemExit:
            if time.monotonic() > deadline:
                raise


def timed_in_guest(cloud: Cloud, server: str, command: str) -> float:
    """Seconds ``command`` took in the guest (its uptime before and after)."""
    line = (f"a=$(cut -d' ' -f1 /proc/uptime); {command}; "
            "b=$(cut -d' ' -f1 /proc/uptime); echo took-$a-$b-end")  # fmt: skip
    match = TIMED.search(serial(cloud, server, line, TIMED.pattern))
    assert match is not None
    return float(match.group(2)) - float(match.group(1))


def timed_on_host(*command: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main(mib: int) -> dict[str, Any]:
    data_dir = Path(os.environ.get("BENCH_DIR", "/var/tmp/onestack-bench-volio"))
    subprocess.run(["rm", "-rf", str(data_dir)], check=True)
    data_dir.mkdir(parents=True)
    image = build(data_dir / "guest.qcow2")
    cloud = Cloud(data_dir)
    results: dict[str, Any] = {"mib": mib}
    try:
        cloud.start()
        image_id = cloud.send("POST", "/image/v2/images", json={
            "name": "guest", "disk_format": "qcow2", "container_format": "bare"})["id"]  # fmt: skip
        cloud.send("PUT", f"/image/v2/images/{image_id}/file", content=image.read_bytes(),
                   headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        server = cloud.send("POST", "/compute/v2.1/servers", json={"server": {
            "name": "io", "imageRef": image_id, "flavorRef": "1", "networks": "none"}})  # fmt: skip
        server_id = server["server"]["id"]
        deadline = time.monotonic() + 600
        while True:
            output = cloud.http.post(f"{cloud.base}/compute/v2.1/servers/{server_id}/action",
                                     json={"os-getConsoleOutput": {}})  # fmt: skip
            if output.status_code == 200 and MARKER in output.json().get("output", ""):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the guest did not boot")
            time.sleep(1)
        volume_id = cloud.send("POST", f"/volume/v3/{cloud.project}/volumes",
                               json={"volume": {"size": 1}})["volume"]["id"]  # fmt: skip
        cloud.volume_status(volume_id, "available")

        started = time.monotonic()
        cloud.send("POST", f"/compute/v2.1/servers/{server_id}/os-volume_attachments",
                   json={"volumeAttachment": {"volumeId": volume_id}})  # fmt: skip
        in_use = cloud.volume_status(volume_id, "in-use")
        seen = until_guest(cloud, server_id, "ls /sys/block | sed 's/^vdb$/vdb-here/'",
                           "vdb-here")  # fmt: skip
        results["attach_in_use_s"] = round(in_use - started, 2)
        results["attach_guest_sees_s"] = round(seen - started, 2)

        results["guest_write_s"] = timed_in_guest(
            cloud, server_id, f"dd if=/dev/zero of=/dev/vdb bs=1M count={mib} conv=fsync "
            "2>/dev/null")  # fmt: skip
        results["guest_read_s"] = timed_in_guest(
            cloud, server_id, "sync; echo 3 > /proc/sys/vm/drop_caches; "
            f"dd if=/dev/vdb of=/dev/null bs=1M count={mib} 2>/dev/null")  # fmt: skip

        started = time.monotonic()
        cloud.send("DELETE", f"/compute/v2.1/servers/{server_id}/os-volume_attachments/{volume_id}")
        available = cloud.volume_status(volume_id, "available")
        gone = until_guest(
            cloud, server_id, "ls /sys/block | grep -c vdb | sed 's/^0$/vdb-gone/'", "vdb-gone"
        )
        results["detach_available_s"] = round(available - started, 2)
        results["detach_guest_gone_s"] = round(gone - started, 2)

        backend = next((data_dir / "volumes").iterdir())
        probe = backend / "host-baseline.raw"
        results["host_write_s"] = timed_on_host(
            "dd", "if=/dev/zero", f"of={probe}", "bs=1M", f"count={mib}", "conv=fsync"
        )
        results["host_read_s"] = timed_on_host(
            "dd", f"if={probe}", "of=/dev/null", "bs=1M", f"count={mib}", "iflag=direct"
        )
        probe.unlink()
        for where in ("guest", "host"):
            for op in ("write", "read"):
                seconds = results[f"{where}_{op}_s"]
                results[f"{where}_{op}_mb_s"] = round(mib * 1.048576 / seconds, 1)
                results[f"{where}_{op}_s"] = round(seconds, 2)
        hypervisors = cloud.get("/compute/v2.1/os-hypervisors/detail")["hypervisors"]
        results["accel"] = hypervisors[0].get("cpu_info", {}).get("accel", "")
        results["load_average"] = os.getloadavg()[0]
        cloud.send("DELETE", f"/compute/v2.1/servers/{server_id}")
    finally:
        cloud.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    figures = main(args.mib)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "volume_guest_io.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
