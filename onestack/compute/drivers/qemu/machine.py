"""One guest's QEMU process: its files, its command line, starting it and talking QMP to it.

QEMU daemonizes (``-daemonize -pidfile``), so guests outlive the agent that
started them; a restarted agent finds them again through the per-guest state
directory (pidfile, QMP socket, the saved definition).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from onestack.compute.drivers.base import DriverError


@dataclass
class Disk:
    """A disk as QEMU sees it."""

    id: str
    path: str
    format: str
    bus: str = "virtio"  # virtio, ide, scsi, cdrom
    readonly: bool = False
    boot: bool = False
    serial: str = ""


@dataclass
class Nic:
    """A NIC: a tap of the data plane's bridge, or QEMU's user networking."""

    id: str
    mac: str
    model: str = "virtio-net-pci"
    tap: str = ""  # empty: user networking


@dataclass
class Definition:
    """Everything the command line is made of; saved as ``definition.json``."""

    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    accel: str
    machine: str = "pc"
    firmware: str = "bios"
    disks: list[Disk] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Definition:
        data = json.loads(path.read_text())
        data["disks"] = [Disk(**d) for d in data.get("disks", [])]
        data["nics"] = [Nic(**n) for n in data.get("nics", [])]
        return cls(**data)

    def save(self, path: Path) -> None:
        partial = path.with_name(path.name + ".part")
        partial.write_text(json.dumps(asdict(self), indent=1))
        partial.replace(path)


SOCKET_ROOT = Path(
    "/run/onestack-qemu" if os.geteuid() == 0 else f"/tmp/onestack-qemu-{os.getuid()}"
)
OVMF_PATHS = ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd")


class Machine:
    """The files and process of one guest, in ``directory``."""

    def __init__(self, directory: Path, binary: str = "qemu-system-x86_64"):
        self.dir = directory
        self.binary = binary
        # UNIX socket paths are limited to 107 bytes: the sockets live in a short directory
        # named after the guest's state directory (two hosts on one machine never share it).
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:20]
        self.socket_dir = SOCKET_ROOT / digest

    @property
    def definition_path(self) -> Path:
        return self.dir / "definition.json"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qmp_socket(self) -> Path:
        return self.socket_dir / "qmp.sock"

    @property
    def serial_socket(self) -> Path:
        """The serial console: connect to type into the guest's shell."""
        return self.socket_dir / "serial.sock"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def memory_state(self) -> Path:
        """The saved memory of a suspended guest."""
        return self.dir / "memory.state"

    def definition(self) -> Definition:
        if not self.definition_path.exists():
            raise DriverError(f"no guest defined in {self.dir}")
        return Definition.load(self.definition_path)

    def pid(self) -> int | None:
        """The pid of this guest's running QEMU (checked against its command line)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if str(self.qmp_socket).encode() not in cmdline:
            return None
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def command(
        self,
        definition: Definition,
        incoming: str | None = None,
        tap_fds: dict[str, int] | None = None,
        volume_args: list[str] | None = None,
    ) -> list[str]:
        """The QEMU command line of ``definition`` (``incoming``: restore from this URI;
        ``tap_fds``: an open queue of each NIC's tap, by NIC id; ``volume_args``: the
        plugged volumes' devices, which name their PCI addresses)."""
        d = definition
        accel = "kvm" if d.accel == "kvm" else "tcg"
        args = [
            self.binary,
            "-name",
            f"guest={d.name},debug-threads=on",
            "-uuid",
            d.uuid,
            "-machine",
            f"{d.machine},accel={accel}",
            "-smp",
            str(d.vcpus),
            "-m",
            str(d.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "std",
            "-vnc",
            "127.0.0.1:0,to=4000",
            "-chardev",
            f"socket,id=serial0,path={self.serial_socket},server=on,wait=off,"
            f"logfile={self.console_log},logappend=on",
            "-serial",
            "chardev:serial0",
            "-qmp",
            f"unix:{self.qmp_socket},server=on,wait=off",
            # Devices at fixed addresses come before those QEMU places, which skip them.
            *(volume_args or []),
            "-device",
            # Free page reporting hands pages the guest freed back to the host.
            "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
            "-daemonize",
            "-pidfile",
            str(self.pidfile),
        ]
        if d.firmware == "uefi":
            ovmf = next((p for p in OVMF_PATHS if Path(p).exists()), None)
            if ovmf is None:
                raise DriverError("UEFI firmware requested but OVMF is not installed (ovmf)")
            args += ["-bios", ovmf]
        if any(disk.bus == "scsi" for disk in d.disks):
            args += ["-device", "virtio-scsi-pci,id=scsi0"]
        for index, disk in enumerate(d.disks):
            args += self._disk_args(disk, index)
        for nic in d.nics:
            if nic.tap and tap_fds and nic.id in tap_fds:
                netdev = f"tap,id=net-{nic.id},fd={tap_fds[nic.id]}"
            elif nic.tap:
                netdev = f"tap,id=net-{nic.id},ifname={nic.tap},script=no,downscript=no"
            else:
                netdev = f"user,id=net-{nic.id}"
            args += [
                "-netdev",
                netdev,
                "-device",
                f"{nic.model},netdev=net-{nic.id},mac={nic.mac},id=nic-{nic.id}",
            ]
        if incoming:
            args += ["-incoming", incoming]
        return args

    @staticmethod
    def _disk_args(disk: Disk, index: int) -> list[str]:
        drive = f"file={disk.path},format={disk.format},if=none,id={disk.id},discard=unmap"
        if disk.readonly:
            drive += ",readonly=on"
        boot = f",bootindex={index + 1}" if disk.boot else ""
        serial = f",serial={disk.serial}" if disk.serial else ""
        if disk.bus == "cdrom":
            device = f"ide-cd,drive={disk.id},id=dev-{disk.id},bus=ide.1{boot}"
        elif disk.bus == "ide":
            device = f"ide-hd,drive={disk.id},id=dev-{disk.id}{boot}{serial}"
        elif disk.bus == "scsi":
            device = f"scsi-hd,drive={disk.id},id=dev-{disk.id},bus=scsi0.0{boot}{serial}"
        else:
            device = f"virtio-blk-pci,drive={disk.id},id=dev-{disk.id}{boot}{serial}"
        return ["-drive", drive, "-device", device]

    async def start(
        self,
        definition: Definition,
        incoming: str | None = None,
        volume_args: list[str] | None = None,
    ) -> None:
        """Start QEMU for ``definition`` (and the volumes of ``volume_args``); returns once it
        runs (or raises with QEMU's error)."""
        if self.running():
            return
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in (self.qmp_socket, self.serial_socket, self.pidfile):
            stale.unlink(missing_ok=True)
        from onestack.compute.drivers.qemu.networking import open_tap

        tap_fds: dict[str, int] = {}
        # QEMU's output goes to a file, not a pipe: the daemonized guest may hold a pipe
        # open (it does under uvloop), so reading it to the end would wait for the guest.
        with tempfile.TemporaryFile() as log:
            try:
                for nic in definition.nics:
                    if nic.tap:
                        tap_fds[nic.id] = open_tap(nic.tap)
                process = await asyncio.create_subprocess_exec(
                    *self.command(definition, incoming, tap_fds, volume_args),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=self.dir,
                    pass_fds=tuple(tap_fds.values()),
                )
                await process.wait()
            finally:
                for fd in tap_fds.values():
                    os.close(fd)
            log.seek(0)
            output = log.read()
        if process.returncode != 0 or not self.running():
            text = output.decode(errors="replace").strip()
            raise DriverError(f"qemu did not start: {text[-500:] or process.returncode}")

    async def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command (a fresh connection each time: QMP takes one client)."""
        client = QMPClient(self.dir.name)
        try:
            await asyncio.wait_for(client.connect(str(self.qmp_socket)), 10)
            return await asyncio.wait_for(client.execute(command, arguments or None), 60)
        except (OSError, TimeoutError) as exc:
            raise DriverError(f"QMP {command} failed: {exc}") from exc
        except Exception as exc:
            raise DriverError(f"QMP {command}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def qmp_with_fd(
        self, descriptor: int, fdname: str, command: str, **arguments: Any
    ) -> Any:
        """Hand QEMU ``descriptor`` as ``fdname`` (QMP getfd), then run ``command`` using it."""
        client = QMPClient(self.dir.name)
        # qemu.qmp's send_fd_scm reaches into the standard loop's socket wrapper, which
        # uvloop's transports lack; a duplicate of our own connected socket sends the fd.
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = None
        handed_over = False
        try:
            connection.setblocking(False)
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(connection, str(self.qmp_socket)), 10)
            channel = connection.dup()
            handed_over = True  # from here the client's transport owns and closes it
            await asyncio.wait_for(client.connect(connection), 10)
            rights = struct.pack("@i", descriptor)
            channel.sendmsg([b" "], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            await client.execute("getfd", {"fdname": fdname})
            return await asyncio.wait_for(client.execute(command, arguments or None), 60)
        except Exception as exc:
            raise DriverError(f"QMP {command}: {exc}") from exc
        finally:
            if channel is not None:
                channel.close()
            with contextlib.suppress(Exception):
                await client.disconnect()
            if not handed_over:
                connection.close()

    async def status(self) -> str | None:
        """QEMU's run state (running, paused, shutdown, ...); None when it is not running."""
        if not self.running():
            return None
        try:
            answer = await self.qmp("query-status")
        except DriverError:
            return None if not self.running() else "unknown"
        return str(answer.get("status"))

    async def wait_exit(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return True
            await asyncio.sleep(0.2)
        return not self.running()

    async def kill(self) -> None:
        """Stop the process now: QMP quit, then SIGTERM, then SIGKILL."""
        if not self.running():
            return
        with contextlib.suppress(DriverError):
            await self.qmp("quit")
        if await self.wait_exit(3):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pid = self.pid()
            if pid is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if await self.wait_exit(5):
                return
        raise DriverError(f"qemu of {self.dir.name} does not die")

    def remove_sockets(self) -> None:
        """Remove the socket directory (the guest is gone)."""
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    async def vnc_port(self) -> int:
        """The TCP port of the guest's VNC server (bound to localhost)."""
        answer = await self.qmp("query-vnc")
        if not answer.get("enabled"):
            raise DriverError("the guest has no VNC server")
        return int(answer["service"])

    async def wait_job(self, kind: str, timeout: float) -> None:
        """Wait for the migration (``kind`` "migrate") to complete."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self.qmp("query-migrate")
            status = answer.get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise DriverError(f"{kind} {status}: {answer.get('error-desc', '')}")
            await asyncio.sleep(0.2)
        raise DriverError(f"{kind} did not finish within {timeout:g} s")
