"""The guest image builder's pure parts: the initramfs archive format and module order."""

from __future__ import annotations

from pathlib import Path

from onestack.compute.guest_image import GUEST_MODULES, _Cpio, _module_order


def _entries(archive: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of each newc entry, as the kernel reads them."""
    entries = []
    offset = 0
    while True:
        header = archive[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        start = offset + 110
        name = archive[start : start + name_size - 1].decode()
        data_start = start + name_size + (-(110 + name_size) % 4)
        data = archive[data_start : data_start + size]
        entries.append((name, mode, data))
        offset = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return entries


def test_cpio_newc_entries_are_aligned_and_complete():
    archive = _Cpio()
    archive.directory("etc")
    archive.file("etc/rcS.sh", b"#!/bin/sh\necho hi\n", 0o755)
    archive.symlink("init", "bin/busybox")
    data = archive.finish()
    assert len(data) % 4 == 0
    entries = _entries(data)
    assert [name for name, _, _ in entries] == ["etc", "etc/rcS.sh", "init", "TRAILER!!!"]
    assert entries[0][1] & 0o170000 == 0o040000
    assert entries[1][1] == 0o100755 and entries[1][2] == b"#!/bin/sh\necho hi\n"
    assert entries[2][1] & 0o170000 == 0o120000 and entries[2][2] == b"bin/busybox"


def test_modules_come_after_their_dependencies(tmp_path: Path):
    def module(name: str, depends: str) -> None:
        path = tmp_path / "kernel" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0vermagic=x\0"
        )

    module("virtio_net", "net_failover,virtio,virtio_ring")
    module("net_failover", "failover")
    module("failover", "")
    module("virtio", "")
    module("virtio_ring", "virtio")
    module("unrelated", "")
    names = [p.name.removesuffix(".ko") for p in _module_order(tmp_path)]
    assert "virtio_net" in GUEST_MODULES and "unrelated" not in names
    for name, needs in (("virtio_net", "net_failover"), ("net_failover", "failover"),
                        ("virtio_ring", "virtio"), ("virtio_net", "virtio_ring")):  # fmt: skip
        assert names.index(needs) < names.index(name)
