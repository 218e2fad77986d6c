"""Which accelerator QEMU can use here: KVM when a tiny guest really runs under it, else TCG.

/dev/kvm existing is not enough: nested KVM can fail to emulate real-mode and
protected-mode transitions (``KVM internal error ... emulation failure``) and
the guest then hangs. The probe boots a 2 MiB disk whose syslinux runs
``poweroff.c32`` (the same kind of boot loader code guests run): QEMU exits
by itself within a second when the accelerator works. A probe that does not
finish within a few seconds is killed and counts as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from onestack.compute.guest_image import SYSLINUX_MODULES

PROBE_TIMEOUT = 6.0


@dataclass
class Acceleration:
    """The accelerator guests are started with and why."""

    accel: str  # "kvm" or "tcg"
    detail: str  # what the probe saw
    probe_seconds: float = 0.0


def _probe_disk(path: Path) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with partial.open("wb") as handle:
        handle.truncate(2 << 20)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mkfs.fat", "-F", "12", str(partial)], check=True, capture_output=True)
    subprocess.run(["syslinux", "--install", str(partial)], check=True)
    config = path.with_name("probe-syslinux.cfg")
    config.write_text("DEFAULT poweroff.c32\nPROMPT 0\n")
    for source, name in (
        (config, "syslinux.cfg"),
        (SYSLINUX_MODULES / "poweroff.c32", "poweroff.c32"),
        (SYSLINUX_MODULES / "libcom32.c32", "libcom32.c32"),
    ):
        subprocess.run(
            ["mcopy", "-o", "-i", str(partial), str(source), f"::{name}"], check=True, env=env
        )
    config.unlink()
    partial.replace(path)
    return path


async def probe(binary: str, workdir: Path, timeout: float = PROBE_TIMEOUT) -> Acceleration:
    """Try KVM with the probe disk; TCG when it is absent, fails or does not finish in time."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Acceleration("tcg", "no usable /dev/kvm")
    try:
        disk = await asyncio.to_thread(_probe_disk, workdir / "accel-probe.img")
    except (OSError, subprocess.CalledProcessError) as exc:
        return Acceleration("tcg", f"probe disk could not be made: {exc}")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        binary, "-machine", "pc,accel=kvm", "-nodefaults", "-display", "none", "-m", "32",
        "-no-reboot", "-drive", f"file={disk},format=raw,if=ide,snapshot=on",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    errors: list[str] = []

    async def watch() -> None:
        # A KVM emulation failure leaves QEMU paused, not exited: stop at its report.
        async for raw in process.stderr:  # type: ignore[union-attr]
            line = raw.decode(errors="replace").strip()
            if "warning" not in line:
                errors.append(line)
            if "KVM internal error" in line or "emulation failure" in line:
                return
        await process.wait()

    try:
        await asyncio.wait_for(watch(), timeout)
    except TimeoutError:
        errors.append(f"the probe guest did not finish within {timeout:g} s")
    finally:
        # Also when the probe is cancelled (the agent stops): no probe guest outlives it.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    seconds = time.monotonic() - started
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        return Acceleration("tcg", f"kvm probe failed: {' '.join(errors[:2])}", seconds)
    if process.returncode == 0 and not errors:
        return Acceleration("kvm", "kvm probe guest ran", seconds)
    return Acceleration("tcg", f"kvm probe failed: {' '.join(errors[:2])}", seconds)
