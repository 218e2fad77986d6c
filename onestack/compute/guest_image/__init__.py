"""The small bootable guest image ``onestack guest-image build`` makes from Debian packages.

A cirros-like disk: an MBR with syslinux booting a FAT partition that holds the
Debian cloud kernel and an initramfs (busybox-static, which formats and mounts attached
volumes with mke2fs and mount; the virtio/ATA/ISO 9660 modules, and ext4 when the kernel
has it as a module; an init that brings the NIC up with DHCP, reads the config drive or
the metadata service and prints a marker line on the serial console). The guest runs
from RAM; the disk only carries the boot files. Nothing is downloaded except the kernel
package, through apt, when apt's cache lacks it.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

DISK_MB = 64
PARTITION_START = 2048  # sectors: the partition starts at 1 MiB
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
APT_ARCHIVES = Path("/var/cache/apt/archives")
# The kernel modules the guest loads (their dependencies are added from each module's
# .modinfo): virtio disks and NICs, the e1000 NIC, the IDE CD-ROM the config drive is on,
# ISO 9660 to read it, ext4 (which also mounts ext2: busybox's mke2fs formats attached
# volumes) and the ACPI power button for clean shutdowns. A module the kernel has built
# in (the Debian cloud kernel builds ext4 in) has no file and is skipped.
GUEST_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_balloon",
    "e1000",
    "ata_piix",
    "sr_mod",
    "isofs",
    "ext4",
    "button",
    "evdev",
)
MARKER = "onestack-guest ready"

Step = Callable[[str], None]


class GuestImageError(Exception):
    """The guest image could not be built (a tool or package is missing)."""


def default_path(data_dir: Path) -> Path:
    """Where the built guest image is cached in the data dir."""
    return data_dir / "guest-images" / "onestack-guest.qcow2"


def build(output: Path, step: Step = lambda _: None, workdir: Path | None = None) -> Path:
    """Build the guest image into ``output`` (qcow2); ``step`` is told each stage."""
    _require_tools()
    with tempfile.TemporaryDirectory(prefix="guest-image-", dir=workdir) as tmp:
        work = Path(tmp)
        step("finding the kernel package")
        deb = _kernel_package(work)
        step(f"unpacking {deb.name}")
        kernel_root = work / "kernel"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(kernel_root)], check=True)
        vmlinuz = next((kernel_root / "boot").glob("vmlinuz-*"))
        module_dir = next((kernel_root / "lib" / "modules").iterdir())
        step("assembling the initramfs")
        initrd = work / "initrd.gz"
        initrd.write_bytes(_initramfs(module_dir))
        step("writing the boot disk")
        raw = work / "disk.raw"
        _boot_disk(raw, vmlinuz, initrd, work)
        step("converting to qcow2")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".part")
        subprocess.run(
            ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(partial)],
            check=True,
        )
        partial.replace(output)
    return output


def _require_tools() -> None:
    needed = {
        "busybox": "busybox-static",
        "qemu-img": "qemu-utils",
        "mkfs.fat": "dosfstools",
        "mcopy": "mtools",
        "syslinux": "syslinux",
        "dpkg-deb": "dpkg",
    }
    missing = sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None})
    if not SYSLINUX_MBR.exists():
        missing.append("syslinux-common")
    if missing:
        raise GuestImageError(
            f"missing Debian packages: {' '.join(missing)} (scripts/setup-runtime.sh installs them)"
        )
    if not _busybox_is_static(Path(shutil.which("busybox") or "/bin/busybox")):
        raise GuestImageError("busybox is not statically linked: install busybox-static")


def _busybox_is_static(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    # Dynamically linked ELF files name their interpreter (ld-linux) in PT_INTERP.
    return b"ld-linux" not in head


def _kernel_package(work: Path) -> Path:
    """The Debian cloud kernel .deb: from apt's cache, else downloaded through apt."""
    for pattern in ("linux-image-*-cloud-amd64_*.deb", "linux-image-[0-9]*-amd64_*.deb"):
        found = sorted(p for p in APT_ARCHIVES.glob(pattern) if "-dbg" not in p.name)
        if found:
            return found[-1]
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    match = re.search(r"Depends: (linux-image-[\w.+-]+-cloud-amd64)\b", depends)
    if not match:
        raise GuestImageError("no Debian kernel package found (apt-get update?)")
    download = work / "download"
    download.mkdir()
    result = subprocess.run(
        ["apt-get", "download", match.group(1)], cwd=download, capture_output=True, text=True
    )
    debs = list(download.glob("*.deb"))
    if result.returncode or not debs:
        raise GuestImageError(f"apt-get download {match.group(1)} failed: {result.stderr[-300:]}")
    return debs[0]


def _module_order(module_dir: Path) -> list[Path]:
    """The module files to load, each after the modules it depends on."""
    by_name = {p.name.removesuffix(".ko").replace("-", "_"): p for p in module_dir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen or name not in by_name:
            return
        seen.add(name)
        match = re.search(rb"depends=([^\0]*)\0", by_name[name].read_bytes())
        for dependency in match.group(1).decode().split(",") if match else []:
            if dependency:
                visit(dependency)
        order.append(by_name[name])

    for module in GUEST_MODULES:
        visit(module)
    return order


def _initramfs(module_dir: Path) -> bytes:
    """A gzipped newc cpio archive with busybox, the init scripts and the modules."""
    here = Path(__file__).parent
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    archive = _Cpio()
    for directory in (
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "mnt",
        "root",
        "var",
        "var/run",
    ):
        archive.directory(directory)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        if applet != "bin/busybox":
            depth = applet.count("/")
            archive.symlink(applet, "../" * depth + "bin/busybox")
    archive.symlink("init", "bin/busybox")
    archive.file(
        "etc/inittab",
        b"::sysinit:/etc/rcS.sh\n"
        b"ttyS0::respawn:-/bin/sh\n"
        b"tty1::respawn:-/bin/sh\n"
        b"::ctrlaltdel:/sbin/reboot\n"
        b"::shutdown:/bin/umount -a -r\n",
        0o644,
    )
    archive.file("etc/rcS.sh", (here / "rcS.sh").read_bytes(), 0o755)
    archive.file("etc/udhcpc.sh", (here / "udhcpc.sh").read_bytes(), 0o755)
    archive.file("etc/acpi/PWRF/00000080", b"#!/bin/sh\npoweroff\n", 0o755)
    archive.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    archive.file("etc/group", b"root:x:0:\n", 0o644)
    archive.file(
        "etc/profile", b"export PS1='\\h# '\nexport PATH=/bin:/sbin:/usr/bin:/usr/sbin\n", 0o644
    )
    modules = _module_order(module_dir)
    for module in modules:
        archive.file(f"lib/modules/{module.name}", module.read_bytes(), 0o644)
    load_order = "".join(m.name.removesuffix(".ko") + "\n" for m in modules)
    archive.file("lib/modules/load-order", load_order.encode(), 0o644)
    return gzip.compress(archive.finish(), compresslevel=9, mtime=0)


class _Cpio:
    """Writes a cpio archive in the "newc" format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._inode = 1

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._inode += 1
        self._out.write(header + encoded)
        self._out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"")

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return self._out.getvalue()


def _boot_disk(raw: Path, vmlinuz: Path, initrd: Path, work: Path) -> None:
    """An MBR disk with one bootable FAT partition holding syslinux, the kernel, the initrd."""
    total_sectors = DISK_MB * 2048
    part_sectors = total_sectors - PARTITION_START
    with raw.open("wb") as handle:
        handle.truncate(total_sectors * 512)
    offset = PARTITION_START * 512
    subprocess.run(
        [
            "mkfs.fat",
            "-F",
            "16",
            "-n",
            "ONESTACK",
            "--offset",
            str(PARTITION_START),
            str(raw),
            str(part_sectors // 2),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["syslinux", "--install", "--offset", str(offset), str(raw)], check=True)
    config = work / "syslinux.cfg"
    config.write_text(
        "DEFAULT onestack\nPROMPT 0\nTIMEOUT 0\nLABEL onestack\n  KERNEL /vmlinuz\n"
        "  INITRD /initrd.gz\n  APPEND console=tty0 console=ttyS0,115200 quiet panic=5\n"
    )
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    target = f"{raw}@@{offset}"
    for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.gz"), (config, "syslinux.cfg")):
        subprocess.run(["mcopy", "-o", "-i", target, str(source), f"::{name}"], check=True, env=env)
    boot_code = SYSLINUX_MBR.read_bytes()[:440]
    # One primary partition: bootable, FAT16 (LBA), from 1 MiB to the end of the disk.
    entry = struct.pack(
        "<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x0E, b"\xfe\xff\xff", PARTITION_START, part_sectors
    )
    with raw.open("r+b") as handle:
        handle.write(boot_code)
        handle.seek(440)
        handle.write(struct.pack("<IH", 0x4F4E4553, 0))  # disk signature "SENO"
        handle.write(entry + b"\0" * 48 + b"\x55\xaa")
