"""Block storage benchmark (issue #8): backup and restore throughput of a 1 GiB volume.

Against a real ``onestack up`` (file volume backend, object storage in the same process):

1. a 1 GiB volume filled with random bytes (incompressible: the worst case for zlib) by
   writing its raw file, as a guest would have;
2. full backup (``POST /v3/backups``, polled every 100 ms until ``available``);
3. 1% of the volume changed (10 MiB at the middle), then an incremental backup;
4. restore of the incremental into a new volume, and of the full backup into another;
   each restored volume's SHA-256 is compared with the source's at that point;
5. beside it, on the same disk in the same run: ``cp`` of the volume file (the I/O
   ceiling) and SHA-256 + zlib level 1 of it in this process (the CPU floor of one core).

MB/s is the volume's size (1 GiB = 1073.7 MB) over the time from the request to
``available``; objects sent says how many chunk objects each backup stored.

    .venv/bin/python bench/volume_backup.py
    .venv/bin/python bench/volume_backup.py --size 2

Output: a markdown table on stdout and in ``bench/results/volume_backup.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import shutil
import sys
import time
import zlib
from pathlib import Path

import httpx
from volume_common import commit, onestack_up, wait_status, write_results

MIB = 1 << 20


def fill(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        for _ in range(size // (4 * MIB)):
            handle.write(os.urandom(4 * MIB))
        os.fsync(handle.fileno())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def cpu_floor(path: Path) -> float:
    """Seconds for SHA-256 + zlib level 1 of the file on one core."""
    started = time.perf_counter()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MIB):
            hashlib.sha256(block).digest()
            zlib.compress(block, 1)
    return time.perf_counter() - started


async def timed(coro: object) -> float:
    started = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - started


async def run(size_gib: int) -> str:
    rows: list[tuple[str, float, str]] = []
    size_mb = size_gib * (1 << 30) / 1e6
    with onestack_up() as server:
        headers = server.headers()
        async with httpx.AsyncClient(timeout=600) as client:

            async def volume() -> dict[str, str]:
                made = await client.post(f"{server.volume_url}/volumes", headers=headers,
                                         json={"volume": {"size": size_gib}})  # fmt: skip
                return await wait_status(
                    client, server, "volume", made.json()["volume"]["id"], "available"
                )

            def path_of(volume_id: str) -> Path:
                return server.data_dir / "volumes" / "file" / f"volume-{volume_id}.raw"

            async def backup(volume_id: str, incremental: bool) -> dict[str, str]:
                made = await client.post(f"{server.volume_url}/backups", headers=headers, json={
                    "backup": {"volume_id": volume_id, "incremental": incremental}})  # fmt: skip
                return await wait_status(client, server, "backup", made.json()["backup"]["id"],
                                         "available", interval=0.1)  # fmt: skip

            async def restore(backup_id: str) -> tuple[float, str]:
                started = time.perf_counter()
                made = await client.post(f"{server.volume_url}/backups/{backup_id}/restore",
                                         headers=headers, json={"restore": {}})  # fmt: skip
                target = made.json()["restore"]["volume_id"]
                await wait_status(client, server, "volume", target, "available", interval=0.1)
                return time.perf_counter() - started, target

            source = await volume()
            path = path_of(source["id"])
            await asyncio.to_thread(fill, path, size_gib << 30)
            full_digest = await asyncio.to_thread(sha256, path)

            cpu0, started = server.cpu_seconds(), time.perf_counter()
            full = await backup(source["id"], False)
            seconds, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu0
            rows.append(("full backup", seconds, f"{full['object_count']} objects, "
                         f"server CPU {cpu:.1f} s"))  # fmt: skip

            with open(path, "r+b") as handle:
                handle.seek(size_gib * 512 * MIB)
                handle.write(os.urandom(size_gib * 10 * MIB))
            incremental_digest = await asyncio.to_thread(sha256, path)
            cpu0, started = server.cpu_seconds(), time.perf_counter()
            incremental = await backup(source["id"], True)
            seconds, cpu = time.perf_counter() - started, server.cpu_seconds() - cpu0
            note = f"{incremental['object_count']} objects, server CPU {cpu:.1f} s"
            rows.append(("incremental backup (1% changed)", seconds, note))

            for name, backup_id, expected in (
                ("restore of the incremental (new volume)", incremental["id"], incremental_digest),
                ("restore of the full backup (new volume)", full["id"], full_digest),
            ):
                seconds, target = await restore(backup_id)
                same = await asyncio.to_thread(sha256, path_of(target)) == expected
                rows.append((name, seconds, "same bytes" if same else "BYTES DIFFER"))

        copy = path.with_suffix(".copy")
        started = time.perf_counter()
        await asyncio.to_thread(shutil.copyfile, path, copy)
        rows.append(("baseline: cp of the volume file", time.perf_counter() - started, ""))
        copy.unlink()
        rows.append(("baseline: SHA-256 + zlib-1 on one core", cpu_floor(path), ""))
    lines = [
        f"Volume {size_gib} GiB of random bytes, 4 MiB chunks. "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, "
        f"load average at start {os.getloadavg()[0]:.2f}.",
        "",
        "| operation | seconds | MB/s | notes |",
        "|---|---:|---:|---|",
        *[f"| {name} | {s:.2f} | {size_mb / s:.0f} | {note} |" for name, s, note in rows],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1, help="volume size in GiB")
    args = parser.parse_args(argv)
    text = asyncio.run(run(args.size))
    print(text)
    write_results("volume_backup", text)
    return 1 if "BYTES DIFFER" in text else 0


if __name__ == "__main__":
    sys.exit(main())
