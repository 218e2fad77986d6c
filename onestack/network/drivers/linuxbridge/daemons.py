"""The daemons the data plane runs in its namespaces (dnsmasq, radvd): pid files and files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path


def running(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process still runs with the file on its command line."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(pid_file).encode() in cmdline else None


async def stop(pid: int, pid_file: Path) -> None:
    """SIGTERM, and wait (up to 5 s) until it is gone and its sockets with it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(500):
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            break
        await asyncio.sleep(0.01)
    pid_file.unlink(missing_ok=True)


def write(path: Path, text: str) -> bool:
    """Write ``text`` unless ``path`` already holds it; whether it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
