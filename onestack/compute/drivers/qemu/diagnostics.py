"""A running guest's counters for ``os-server-diagnostics``: run state and block statistics
from QMP (``query-status``, ``query-blockstats``, ``query-cpus-fast``), CPU time, memory
and uptime of the QEMU threads from ``/proc``, NIC counters of the taps from sysfs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import Diagnostics, DriverError
from onestack.compute.drivers.qemu.machine import Definition, Machine

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A tap's transmit is the guest's receive: Nova reports NICs as the guest sees them.
TAP_COUNTERS = {
    "rx_octets": "tx_bytes",
    "rx_errors": "tx_errors",
    "rx_drop": "tx_dropped",
    "rx_packets": "tx_packets",
    "tx_octets": "rx_bytes",
    "tx_errors": "rx_errors",
    "tx_drop": "rx_dropped",
    "tx_packets": "rx_packets",
}
QMP_STATES = {
    "running": "running",
    "paused": "paused",
    "suspended": "suspended",
    "shutdown": "shutdown",
    "internal-error": "crashed",
    "guest-panicked": "crashed",
}


def _stat_fields(path: Path) -> list[str]:
    """The fields of a ``/proc/.../stat`` file after the command name."""
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()


def _cpu_nanoseconds(pid: int, thread: int) -> int:
    """User plus system time of one vCPU thread."""
    fields = _stat_fields(Path(f"/proc/{pid}/task/{thread}/stat"))
    # Fields 14 and 15 of stat (utime, stime), counted from the state field (3).
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLOCK_TICKS


def _uptime(pid: int) -> int:
    """Seconds since the QEMU process started."""
    started = int(_stat_fields(Path(f"/proc/{pid}/stat"))[19]) / CLOCK_TICKS
    booted = float(Path("/proc/uptime").read_text().split()[0])
    return max(0, int(booted - started))


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def _tap_counters(tap: str) -> dict[str, int]:
    directory = Path(f"/sys/class/net/{tap}/statistics")
    counters: dict[str, int] = {}
    for name, source in TAP_COUNTERS.items():
        try:
            counters[name] = int((directory / source).read_text())
        except (OSError, ValueError):
            counters[name] = 0
    return counters


def _disk(entry: dict[str, Any]) -> dict[str, Any]:
    stats = entry.get("stats", {})
    return {
        "id": entry.get("qdev") or entry.get("device") or "",
        "read_bytes": stats.get("rd_bytes", 0),
        "read_requests": stats.get("rd_operations", 0),
        "write_bytes": stats.get("wr_bytes", 0),
        "write_requests": stats.get("wr_operations", 0),
        "errors_count": stats.get("failed_rd_operations", 0) + stats.get("failed_wr_operations", 0),
    }


async def collect(machine: Machine, definition: Definition, config_drive: bool) -> Diagnostics:
    """The diagnostics of ``machine``'s running guest."""
    pid = machine.pid()
    if pid is None:
        raise DriverError(f"server {definition.uuid} is not running")
    status = await machine.qmp("query-status")
    cpus = await machine.qmp("query-cpus-fast")
    blocks = await machine.qmp("query-blockstats")
    uptime = _uptime(pid)
    cpu_details = []
    for cpu in cpus:
        try:
            spent = _cpu_nanoseconds(pid, int(cpu["thread-id"]))
        except (OSError, KeyError, ValueError):
            spent = 0
        share = int(spent / (uptime * 1e7)) if uptime else 0
        cpu_details.append(
            {"id": cpu.get("cpu-index", 0), "time": spent, "utilisation": min(100, share)}
        )
    nics = [
        {
            "mac_address": nic.mac,
            **(_tap_counters(nic.tap) if nic.tap else dict.fromkeys(TAP_COUNTERS, 0)),
            "rx_rate": None,
            "tx_rate": None,
        }
        for nic in definition.nics
    ]
    return Diagnostics(
        state=QMP_STATES.get(str(status.get("status")), "pending"),
        driver="qemu",
        hypervisor="qemu",
        hypervisor_os="linux",
        uptime=uptime,
        config_drive=config_drive,
        memory_details={"maximum": definition.memory_mb, "used": _rss_mib(pid)},
        cpu_details=cpu_details,
        nic_details=nics,
        disk_details=[_disk(entry) for entry in blocks if entry.get("qdev") or entry.get("device")],
    )
