"""NBD exports of volume files for remote compute hosts, served by ``qemu-storage-daemon``.

Each exported volume gets one daemon (``--daemonize``, so it outlives the agent
that started it: attachments survive agent restarts) listening on a TCP port of
the export address, serving the volume decoded as a raw disk under the export
name = the volume id. A small JSON state file beside the volume files records the
port, the daemon's pid and which hosts use the export; the daemon stops when the
last host detaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onestack.volume.drivers.base import VolumeDriverError


@dataclass
class Export:
    """One running export and the hosts that use it."""

    volume_id: str
    port: int
    pid: int
    hosts: list[str] = field(default_factory=list)


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie or a reused pid is not our daemon.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-storage-daemon" in cmdline


class NbdExporter:
    """Starts, records and stops the NBD exports of one backend's volume files."""

    def __init__(self, state_dir: Path, address: str):
        self.state_dir = state_dir
        self.address = address
        self._lock = asyncio.Lock()

    def _state_file(self, volume_id: str) -> Path:
        return self.state_dir / f"export-{volume_id}.json"

    def _load(self, volume_id: str) -> Export | None:
        path = self._state_file(volume_id)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        export = Export(**data)
        return export if _alive(export.pid) else None

    def _save(self, export: Export) -> None:
        path = self._state_file(export.volume_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(export.__dict__))
        tmp.replace(path)

    async def export(
        self, volume_id: str, path: Path, image_format: str, host: str, *, writable: bool
    ) -> dict[str, Any]:
        """Serve the volume to ``host`` (starting the daemon if needed); the NBD target."""
        async with self._lock:
            current = self._load(volume_id)
            if current is None:
                current = await self._start(volume_id, path, image_format, writable)
            if host not in current.hosts:
                current.hosts.append(host)
            self._save(current)
        return {"host": self.address, "port": current.port, "name": volume_id, "format": "raw"}

    async def _start(self, volume_id: str, path: Path, image_format: str, writable: bool) -> Export:
        pidfile = self.state_dir / f"export-{volume_id}.pid"
        pidfile.unlink(missing_ok=True)
        last_error = ""
        for _attempt in range(3):
            port = _free_port(self.address)
            args = [
                "--blockdev",
                f"driver=file,node-name=file0,filename={path},cache.direct=off",
                "--blockdev",
                f"driver={image_format},node-name=disk0,file=file0",
                "--nbd-server",
                f"addr.type=inet,addr.host={self.address},addr.port={port}",
                "--export",
                f"type=nbd,id=export0,node-name=disk0,name={volume_id},"
                f"writable={'on' if writable else 'off'}",
                "--pidfile",
                str(pidfile),
                "--daemonize",
            ]
            # Errors go to a file, not a pipe: the daemonized child may hold a pipe open
            # (it does under uvloop), so reading it to the end would wait for the daemon.
            with tempfile.TemporaryFile() as errors:
                try:
                    process = await asyncio.create_subprocess_exec(
                        "qemu-storage-daemon",
                        *args,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=errors,
                    )
                except FileNotFoundError:
                    raise VolumeDriverError(
                        "qemu-storage-daemon is not installed (Debian: qemu-system-common)"
                    ) from None
                await process.wait()
                errors.seek(0)
                err = errors.read()
            if process.returncode == 0:
                pid = int(pidfile.read_text().strip())
                return Export(volume_id, port, pid)
            last_error = err.decode(errors="replace").strip()
        raise VolumeDriverError(f"could not export volume {volume_id} over NBD: {last_error}")

    async def release(self, volume_id: str, host: str) -> None:
        """``host`` no longer uses the export; stop the daemon when nobody does."""
        async with self._lock:
            current = self._load(volume_id)
            if current is None:
                self._forget(volume_id)
                return
            if host in current.hosts:
                current.hosts.remove(host)
            if current.hosts:
                self._save(current)
                return
            await self._stop(current)
            self._forget(volume_id)

    async def stop_all(self, volume_id: str) -> None:
        """End every export of a volume (it is being deleted)."""
        async with self._lock:
            current = self._load(volume_id)
            if current is not None:
                await self._stop(current)
            self._forget(volume_id)

    def exported(self, volume_id: str) -> bool:
        """Whether a daemon serves the volume now."""
        return self._load(volume_id) is not None

    async def _stop(self, export: Export) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(export.pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(export.pid):
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(export.pid, signal.SIGKILL)

    def _forget(self, volume_id: str) -> None:
        self._state_file(volume_id).unlink(missing_ok=True)
        (self.state_dir / f"export-{volume_id}.pid").unlink(missing_ok=True)
