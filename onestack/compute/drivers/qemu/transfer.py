"""Guest disks moved between hosts that share no storage, over NBD.

Cold moves: the source serves each disk file read-only, as its bytes, with one
``qemu-nbd`` per file bound to the agent's address, until its copy goes (confirm), the
guest starts there again (revert) or ``EXPORT_TIMEOUT`` passes; the destination copies
with ``qemu-img convert`` from ``nbd://``. A root overlay travels as the overlay
only: the destination rebases it on its own copy of the image from the image service.

Live moves: the destination's QEMU waits with ``-incoming defer`` and exports its empty
disks over its NBD server; the source mirrors each disk there (``blockdev-mirror``),
then migrates the memory with a pause before switch-over so that the mirrors are
completed (their target consistent) while the guest is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import DriverError
from onestack.compute.drivers.qemu.machine import Disk, Machine

log = logging.getLogger(__name__)

EXPORT_TIMEOUT = 3600.0
PROGRESS_STEP = 10.0  # percent between progress lines of a copy
MARKER_PREFIX = ".move-"
MIRROR_PREFIX = "mirror-"
_background: set[asyncio.Task[None]] = set()


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the caller binds it next)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def nbd_url(address: str, port: int, name: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"nbd://{host}:{port}/{name}"


def _pidfile(directory: Path, name: str) -> Path:
    return directory / f"nbd-{name}.pid"


async def export_files(directory: Path, names: list[str], address: str) -> list[dict[str, Any]]:
    """Serve each named file of ``directory`` read-only over NBD on ``address``: the
    exports (name, port, size) a destination copies with ``fetch_files``."""
    exports: list[dict[str, Any]] = []
    try:
        for name in names:
            path = directory / name
            port = free_port(address)
            # Errors go to a file, not a pipe: the forked server may hold a pipe open (it
            # does under uvloop), so reading it to the end would wait for the server.
            with tempfile.TemporaryFile() as errors:
                # Persistent: a stray connection must not end the export before the copy.
                process = await asyncio.create_subprocess_exec(
                    "qemu-nbd", "--fork", "--persistent",
                    f"--pid-file={_pidfile(directory, name)}", "--read-only", "--format=raw",
                    f"--bind={address}", f"--port={port}", f"--export-name={name}",
                    "--shared=4", str(path),
                    stdout=asyncio.subprocess.DEVNULL, stderr=errors,
                )  # fmt: skip
                await process.wait()
                errors.seek(0)
                message = errors.read().decode(errors="replace")[-300:]
            if process.returncode:
                raise DriverError(f"qemu-nbd could not export {name}: {message}")
            exports.append({"name": name, "port": port, "size": path.stat().st_size})
    except BaseException:
        stop_exports(directory)
        raise
    in_background(_expire(directory, EXPORT_TIMEOUT))
    return exports


def in_background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` on its own, kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _expire(directory: Path, after: float) -> None:
    await asyncio.sleep(after)
    stop_exports(directory)


def stop_exports(directory: Path) -> None:
    """End the NBD servers still exporting files of ``directory`` (nobody came, or a
    guest starts again on these disks)."""
    for pidfile in directory.glob("nbd-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            # The file outlives its server: the pid may be another process's by now.
            if str(directory).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
        pidfile.unlink(missing_ok=True)


async def fetch_files(address: str, exports: list[dict[str, Any]], directory: Path) -> None:
    """Copy every export of ``export_files`` on ``address`` into ``directory``."""
    for export in exports:
        target = directory / str(export["name"])
        partial = target.with_name(target.name + ".part")
        url = nbd_url(address, int(export["port"]), str(export["name"]))
        try:
            await copy(url, partial, int(export["size"]), target.name)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)


async def copy(url: str, target: Path, size: int, label: str) -> None:
    """``qemu-img convert`` of the bytes at ``url`` into a sparse file, its progress logged
    under ``label``."""
    started = time.monotonic()
    log.info("copying %s (%.1f MiB) to %s", url, size / 2**20, target)
    process = await asyncio.create_subprocess_exec(
        "qemu-img", "convert", "-p", "-f", "raw", "-O", "raw", url, str(target),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    logged = 0.0
    while chunk := await process.stdout.read(256):
        for match in re.finditer(rb"\((\d+(?:\.\d+)?)/100%\)", chunk):
            percent = float(match.group(1))
            if percent >= logged + PROGRESS_STEP and percent < 100:
                logged = percent - percent % PROGRESS_STEP
                log.info("copying %s: %.0f%%", label, percent)
    await process.wait()
    if process.returncode:
        message = (await errors).decode(errors="replace")[-400:]
        raise DriverError(f"copying {url} failed: {message}")
    elapsed = time.monotonic() - started
    log.info("copied %s in %.1f s (%.1f MiB/s)", label, elapsed,
             size / 2**20 / max(elapsed, 1e-3))  # fmt: skip


def leave_marker(directory: Path) -> str:
    """A file a destination looks for to tell that it shares ``directory`` (Nova's test
    of shared instance storage); its name."""
    name = f"{MARKER_PREFIX}{os.urandom(8).hex()}"
    (directory / name).touch()
    return name


def shares(directory: Path, marker: str) -> bool:
    """Whether ``directory`` here is the one the source left ``marker`` in."""
    return bool(marker) and (directory / marker).exists()


def clear_markers(directory: Path) -> None:
    for path in directory.glob(f"{MARKER_PREFIX}*"):
        path.unlink(missing_ok=True)


def mirrored(machine: Machine) -> list[Disk]:
    """The guest's local writable disks, those a block migration copies (volumes and
    the read-only config drive are not: the destination has its own)."""
    return [
        disk
        for disk in machine.definition().disks
        if not disk.readonly and Path(disk.path).parent == machine.dir
    ]


async def _node_names(machine: Machine) -> dict[str, str]:
    return {
        entry["device"]: entry["inserted"]["node-name"]
        for entry in await machine.qmp("query-block")
        if entry.get("inserted")
    }


async def serve_incoming(machine: Machine, address: str) -> dict[str, Any]:
    """On the destination (QEMU started with ``-incoming defer``): export its disks
    writable over NBD and listen for the memory. Where the source sends what."""
    nodes = await _node_names(machine)
    nbd_port = free_port(address)
    await machine.qmp(
        "nbd-server-start", addr={"type": "inet", "data": {"host": address, "port": str(nbd_port)}}
    )
    exports = []
    for disk in mirrored(machine):
        await machine.qmp("block-export-add", type="nbd", id=f"{MIRROR_PREFIX}{disk.id}",
                          **{"node-name": nodes[disk.id]}, writable=True, name=disk.id)  # fmt: skip
        exports.append(disk.id)
    port = free_port(address)
    await machine.qmp("migrate-incoming", uri=f"tcp:{address}:{port}")
    return {"address": address, "port": port, "nbd_port": nbd_port, "exports": exports}


async def stop_serving_when_done(machine: Machine, timeout: float) -> bool:
    """On the destination: end the NBD server once the guest runs here (True); when the
    migration fails or does not come by ``timeout``, stop QEMU (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and machine.running():
        with contextlib.suppress(DriverError):
            if await machine.status() not in (None, "inmigrate"):
                await machine.qmp("nbd-server-stop")
                return True
        await asyncio.sleep(0.5)
    await machine.kill()
    return False


async def block_migrate(machine: Machine, destination: dict[str, Any], timeout: float) -> None:
    """On the source: mirror the disks to the destination's NBD exports, then migrate
    the memory; on failure cancel everything started here."""
    address, nbd_port = str(destination["address"]), int(destination["nbd_port"])
    host = f"[{address}]" if ":" in address else address
    disks = [d for d in mirrored(machine) if d.id in destination["exports"]]
    started: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for disk in disks:
            node = f"{MIRROR_PREFIX}{disk.id}"
            await machine.qmp("blockdev-add", driver="nbd", **{"node-name": node},
                              server={"type": "inet", "host": address, "port": str(nbd_port)},
                              export=disk.id)  # fmt: skip
            started.append(disk.id)
            # The root overlay's base is the image, which the destination has: only the
            # overlay is copied.
            sync = "top" if disk.id == "root" else "full"
            await machine.qmp("blockdev-mirror", **{"job-id": node}, device=disk.id,
                              target=node, sync=sync)  # fmt: skip
        await _wait_ready(machine, [f"{MIRROR_PREFIX}{d}" for d in started], deadline)
        await _pause_before_switchover(machine, True)
        await machine.qmp("migrate", uri=f"tcp:{host}:{destination['port']}")
        await _switch_over(machine, started, deadline)
    except BaseException:
        with contextlib.suppress(DriverError):
            await machine.qmp("migrate_cancel")
        await _drop_mirrors(machine, started, force=True)
        with contextlib.suppress(DriverError):
            await _pause_before_switchover(machine, False)
        raise


async def _pause_before_switchover(machine: Machine, state: bool) -> None:
    capability = {"capability": "pause-before-switchover", "state": state}
    await machine.qmp("migrate-set-capabilities", capabilities=[capability])


async def _wait_ready(machine: Machine, jobs: list[str], deadline: float) -> None:
    logged = 0.0
    while True:
        answer = {j["device"]: j for j in await machine.qmp("query-block-jobs")}
        missing = [job for job in jobs if job not in answer]
        if missing:
            raise DriverError(f"disk mirror {missing[0]} stopped before it was in sync")
        if all(answer[job]["ready"] for job in jobs):
            return
        done = sum(int(answer[j]["offset"]) for j in jobs)
        total = sum(int(answer[j]["len"]) for j in jobs) or 1
        if time.monotonic() - logged > 5:
            logged = time.monotonic()
            log.info("mirroring %s: %.0f%% of %.1f MiB", machine.dir.name,
                     100 * done / total, total / 2**20)  # fmt: skip
        if time.monotonic() > deadline:
            raise DriverError("the disks were not mirrored in time")
        await asyncio.sleep(0.3)


async def _switch_over(machine: Machine, disks: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        answer = await machine.qmp("query-migrate")
        status = answer.get("status")
        if status == "pre-switchover":
            # The guest is stopped: completed mirrors leave their targets consistent.
            await _drop_mirrors(machine, disks, force=False)
            await machine.qmp("migrate-continue", state="pre-switchover")
        elif status == "completed":
            return
        elif status in ("failed", "cancelled"):
            raise DriverError(f"live migration {status}: {answer.get('error-desc', '')}")
        await asyncio.sleep(0.2)
    raise DriverError("live migration did not finish in time")


async def _drop_mirrors(machine: Machine, disks: list[str], *, force: bool) -> None:
    """Cancel the mirror jobs (a ready one completes its copy first), wait until they
    are gone, and remove their NBD targets."""
    jobs = [f"{MIRROR_PREFIX}{d}" for d in disks]
    for job in jobs:
        with contextlib.suppress(DriverError):
            await machine.qmp("block-job-cancel", device=job, force=force)
    for _ in range(300):
        with contextlib.suppress(DriverError):
            running = {j["device"] for j in await machine.qmp("query-block-jobs")}
            if not running & set(jobs):
                break
        await asyncio.sleep(0.1)
    else:
        raise DriverError("the disk mirrors did not stop")
    for job in jobs:
        with contextlib.suppress(DriverError):
            await machine.qmp("blockdev-del", **{"node-name": job})
