"""Object files on a storage node's devices.

Layout, as Swift's: ``<devices>/<device>/objects/<partition>/<suffix>/<hash>/<timestamp>.<ext>``
where ``hash`` is the md5 of the object's name and ``suffix`` its last three hex
digits. ``.data`` holds the bytes, ``.ts`` is a tombstone (a delete), ``.meta``
holds metadata set by a later POST; the newest ``.data`` or ``.ts`` wins.

Each file ends with its metadata: a JSON document, its length (4 bytes) and a
magic word. One file therefore carries data and metadata together, written to
a temporary file, fsync'ed and renamed into place in one atomic step (no
dependency on extended attributes or their size limits). Besides the MD5 of
the whole object (its ETag), the metadata keeps a CRC-32 of every 1 MiB block,
so a reader verifies each block before handing it out: a corrupt replica is
quarantined and never served, and a proxy can continue from another replica at
the exact offset.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 1 << 20
# Large writes hand their pages to the disk as they go (and out of the page cache, as
# Swift's drop_buffer_cache does): writeback starts early and the final fsync is short.
WRITEBACK_EVERY = 8 << 20
MAGIC = b"OSM1"
TRAILER = struct.Struct(">I4s")
RECLAIM_AGE = 7 * 86400
CRC_KEY = "x-onestack-block-crc"


class DiskError(Exception):
    """A storage problem the node answers with an HTTP status."""

    status = 500


class DeviceUnavailable(DiskError):
    """The device directory is missing (unmounted, failed, removed)."""

    status = 507


class Conflict(DiskError):
    """A newer (or equal) write of this name is already on disk."""

    status = 409


class EtagMismatch(DiskError):
    """The bytes received do not have the MD5 the client declared."""

    status = 422


class Quarantined(DiskError):
    """The replica was corrupt and has been moved aside."""

    status = 404


def ensure_dirs(root: Path, *parts: str) -> tuple[Path, list[Path]]:
    """Create ``root/parts...`` one level at a time; never recreate a vanished device root.

    Returns the final path and the directories it created (to fsync).
    """
    if not root.is_dir():
        raise DeviceUnavailable(f"device {root.name} is not available")
    path = root
    created = []
    for part in parts:
        path = path / part
        try:
            os.mkdir(path)
            created.append(path)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise DeviceUnavailable(f"device {root.name} is not available") from None
    return path, created


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def encode_trailer(metadata: dict[str, Any]) -> bytes:
    raw = json.dumps(metadata, separators=(",", ":")).encode()
    return raw + TRAILER.pack(len(raw), MAGIC)


def read_trailer(fd: int, file_size: int) -> tuple[dict[str, Any], int]:
    """The metadata at the end of a file and the size of the data before it."""
    if file_size < TRAILER.size:
        raise ValueError("file too short for metadata")
    length, magic = TRAILER.unpack(os.pread(fd, TRAILER.size, file_size - TRAILER.size))
    if magic != MAGIC or length > file_size - TRAILER.size:
        raise ValueError("bad metadata trailer")
    start = file_size - TRAILER.size - length
    metadata = json.loads(os.pread(fd, length, start))
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not an object")
    return metadata, start


def split_name(filename: str) -> tuple[str, str]:
    stem, _, ext = filename.rpartition(".")
    return stem, ext


@dataclass
class HashDirState:
    """The newest files of one object: what a read or a replicator needs to know."""

    data: str | None = None
    tombstone: str | None = None
    meta: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def timestamp(self) -> str | None:
        """Timestamp of the winning write (data or delete)."""
        return self.data or self.tombstone

    def summary(self) -> dict[str, str]:
        out = {}
        if self.data:
            out["data"] = self.data
        if self.tombstone:
            out["ts"] = self.tombstone
        if self.meta:
            out["meta"] = self.meta
        return out


def cleanup(hash_dir: Path, reclaim_age: float = RECLAIM_AGE) -> HashDirState:
    """Keep the newest data or tombstone (and a newer .meta); remove the rest.

    Tombstones older than ``reclaim_age`` go too, and an empty directory with them.
    """
    try:
        names = os.listdir(hash_dir)
    except FileNotFoundError:
        return HashDirState()
    entries = []
    for name in names:
        stem, ext = split_name(name)
        if ext in ("data", "ts", "meta"):
            entries.append((stem, ext, name))
    entries.sort(reverse=True)
    state = HashDirState()
    keep: list[str] = []
    for stem, ext, name in entries:
        if state.timestamp is None and ext in ("data", "ts"):
            if ext == "data":
                state.data = stem
            else:
                state.tombstone = stem
            keep.append(name)
        elif state.timestamp is None and ext == "meta" and state.meta is None:
            state.meta = stem
            keep.append(name)
    if state.tombstone and state.meta:
        keep.remove(f"{state.meta}.meta")
        state.meta = None
    if state.tombstone and float(state.tombstone) < time.time() - reclaim_age:
        keep.remove(f"{state.tombstone}.ts")
        state.tombstone = None
    for _stem, _ext, name in entries:
        if name not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(hash_dir / name)
    if not keep:
        with contextlib.suppress(OSError):
            os.rmdir(hash_dir)
    state.files = sorted(keep)
    return state


class ObjectDisk:
    """The object files of every device under one ``devices`` directory (blocking calls)."""

    def __init__(self, devices_dir: Path, reclaim_age: float = RECLAIM_AGE):
        self.devices_dir = devices_dir
        self.reclaim_age = reclaim_age

    def root(self, device: str) -> Path:
        root = self.devices_dir / device
        if not root.is_dir():
            raise DeviceUnavailable(f"device {device} is not available")
        return root

    def hash_dir(self, device: str, part: int, name_hash: str) -> Path:
        return self.devices_dir / device / "objects" / str(part) / name_hash[-3:] / name_hash

    def state(self, device: str, part: int, name_hash: str) -> HashDirState:
        self.root(device)
        return cleanup(self.hash_dir(device, part, name_hash), self.reclaim_age)

    # -- writes ---------------------------------------------------------------------------

    def create(
        self, device: str, part: int, name_hash: str, timestamp: str, *, hashing: bool = True
    ) -> DiskWriter:
        """Start writing a new ``.data``; 409 when a newer write already exists.

        ``hashing=False``: the caller supplies the digest at commit (computed once for all
        replicas in this process).
        """
        current = self.state(device, part, name_hash)
        if current.timestamp and current.timestamp >= timestamp:
            raise Conflict(current.timestamp)
        tmp_dir, _ = ensure_dirs(self.root(device), "tmp")
        tmp = tmp_dir / f"{name_hash}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return DiskWriter(self, device, part, name_hash, timestamp, tmp, fd, hashing=hashing)

    def write_marker(
        self,
        device: str,
        part: int,
        name_hash: str,
        timestamp: str,
        ext: str,
        metadata: dict[str, Any],
    ) -> HashDirState:
        """Write a tombstone (``ts``) or a metadata update (``meta``); returns the prior state."""
        current = self.state(device, part, name_hash)
        newest = max(filter(None, (current.timestamp, current.meta)), default=None)
        if newest and newest >= timestamp:
            raise Conflict(newest)
        tmp_dir, _ = ensure_dirs(self.root(device), "tmp")
        tmp = tmp_dir / f"{name_hash}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, encode_trailer(metadata))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self._place(device, part, name_hash, tmp, f"{timestamp}.{ext}")
        return current

    def _place(self, device: str, part: int, name_hash: str, tmp: Path, filename: str) -> None:
        """Rename a finished file into its hash directory durably, then tidy the directory."""
        target, created = ensure_dirs(
            self.root(device), "objects", str(part), name_hash[-3:], name_hash
        )
        try:
            os.replace(tmp, target / filename)
        except FileNotFoundError:
            raise DeviceUnavailable(f"device {device} is not available") from None
        fsync_dir(target)
        for path in reversed(created[:-1]):
            fsync_dir(path.parent)
        cleanup(target, self.reclaim_age)
        self.invalidate(device, part, name_hash[-3:])

    def invalidate(self, device: str, part: int, suffix: str) -> None:
        """Mark a suffix's cached hash stale (the replicator recomputes it)."""
        path = self.devices_dir / device / "objects" / str(part) / "hashes.invalid"
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, suffix.encode() + b"\n")
            finally:
                os.close(fd)

    # -- reads ----------------------------------------------------------------------------

    def open(self, device: str, part: int, name_hash: str) -> DiskReader | HashDirState:
        """A reader for the current data, or the state when there is none (deleted/absent)."""
        state = self.state(device, part, name_hash)
        if not state.data:
            return state
        hash_dir = self.hash_dir(device, part, name_hash)
        try:
            fd = os.open(hash_dir / f"{state.data}.data", os.O_RDONLY)
        except FileNotFoundError:
            return self.open(device, part, name_hash)
        try:
            size = os.fstat(fd).st_size
            metadata, data_size = read_trailer(fd, size)
            if int(metadata.get("content-length", -1)) != data_size:
                raise ValueError("size does not match metadata")
            if state.meta:
                meta_fd = os.open(hash_dir / f"{state.meta}.meta", os.O_RDONLY)
                try:
                    update, _ = read_trailer(meta_fd, os.fstat(meta_fd).st_size)
                finally:
                    os.close(meta_fd)
                metadata = merge_post(metadata, update)
        except FileNotFoundError:
            os.close(fd)
            return self.open(device, part, name_hash)
        except (ValueError, KeyError, TypeError):
            os.close(fd)
            self.quarantine(device, part, name_hash)
            raise Quarantined(name_hash) from None
        return DiskReader(self, device, part, name_hash, fd, data_size, metadata)

    def quarantine(self, device: str, part: int, name_hash: str) -> None:
        """Move a corrupt object's directory aside so no read ever returns it."""
        source = self.hash_dir(device, part, name_hash)
        with contextlib.suppress(DeviceUnavailable):
            target_dir, _ = ensure_dirs(self.root(device), "quarantined", "objects")
            target = target_dir / name_hash
            if target.exists():
                target = target_dir / f"{name_hash}-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(source, target)
            self.invalidate(device, part, name_hash[-3:])

    # -- replication ----------------------------------------------------------------------

    def partitions(self, device: str) -> list[int]:
        try:
            names = os.listdir(self.root(device) / "objects")
        except FileNotFoundError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def suffix_hashes(
        self, device: str, part: int, recalculate: list[str] | None = None
    ) -> dict[str, str]:
        """``{suffix: md5 of its files' names}``, cached per partition, stale ones recomputed."""
        part_dir = self.root(device) / "objects" / str(part)
        if not part_dir.is_dir():
            return {}
        cache = part_dir / "hashes.json"
        invalid = part_dir / "hashes.invalid"
        lock_fd = os.open(invalid, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            stale = set(os.read(lock_fd, 1 << 20).decode().split())
            os.ftruncate(lock_fd, 0)
            try:
                hashes: dict[str, str | None] = json.loads(cache.read_bytes())
            except (FileNotFoundError, ValueError):
                hashes = dict.fromkeys(s for s in os.listdir(part_dir) if len(s) == 3)
            stale.update(recalculate or ())
            for suffix in stale:
                hashes[suffix] = None
            for suffix, value in list(hashes.items()):
                if value is None:
                    computed = self._hash_suffix(part_dir / suffix)
                    if computed is None:
                        del hashes[suffix]
                    else:
                        hashes[suffix] = computed
            cache_tmp = part_dir / f".hashes.{os.getpid()}"
            cache_tmp.write_text(json.dumps(hashes))
            os.replace(cache_tmp, cache)
        finally:
            os.close(lock_fd)
        return {k: v for k, v in hashes.items() if v}

    def _hash_suffix(self, suffix_dir: Path) -> str | None:
        try:
            hash_names = sorted(os.listdir(suffix_dir))
        except FileNotFoundError:
            return None
        md5 = hashlib.md5(usedforsecurity=False)
        for name_hash in hash_names:
            state = cleanup(suffix_dir / name_hash, self.reclaim_age)
            for filename in state.files:
                md5.update(f"{name_hash}/{filename}".encode())
        if not any(os.scandir(suffix_dir)):
            with contextlib.suppress(OSError):
                os.rmdir(suffix_dir)
            return None
        return md5.hexdigest()

    def suffix_contents(
        self, device: str, part: int, suffixes: list[str]
    ) -> dict[str, dict[str, str]]:
        """``{hash: {"data"|"ts"|"meta": timestamp}}`` for the objects in ``suffixes``."""
        part_dir = self.root(device) / "objects" / str(part)
        out: dict[str, dict[str, str]] = {}
        for suffix in suffixes:
            try:
                hash_names = os.listdir(part_dir / suffix)
            except FileNotFoundError:
                continue
            for name_hash in hash_names:
                summary = cleanup(part_dir / suffix / name_hash, self.reclaim_age).summary()
                if summary:
                    out[name_hash] = summary
        return out

    def read_marker(self, device: str, part: int, name_hash: str, filename: str) -> dict[str, Any]:
        """The metadata of a tombstone or .meta file (for replication)."""
        path = self.hash_dir(device, part, name_hash) / filename
        fd = os.open(path, os.O_RDONLY)
        try:
            metadata, _ = read_trailer(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return metadata

    def clean_tmp(self, device: str, older_than: float = 86400) -> int:
        """Remove temporary files that an interrupted write left behind; how many."""
        tmp_dir = self.devices_dir / device / "tmp"
        removed = 0
        limit = time.time() - older_than
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(tmp_dir):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < limit:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def remove_partition(self, device: str, part: int) -> None:
        shutil.rmtree(self.devices_dir / device / "objects" / str(part), ignore_errors=True)

    def iter_objects(self, device: str) -> Iterator[tuple[int, str]]:
        """Every (partition, hash) on a device, for the auditor."""
        for part in self.partitions(device):
            part_dir = self.devices_dir / device / "objects" / str(part)
            with contextlib.suppress(FileNotFoundError):
                for suffix in os.listdir(part_dir):
                    if len(suffix) != 3:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        for name_hash in os.listdir(part_dir / suffix):
                            yield part, name_hash


def merge_post(metadata: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Metadata of a data file with a later POST applied: user metadata replaced wholesale."""
    merged = {
        k: v
        for k, v in metadata.items()
        if not k.startswith(("x-object-meta-", "x-object-transient-sysmeta-"))
        and k != "x-delete-at"
    }
    for key, value in update.items():
        if key == "x-timestamp":
            merged["x-meta-timestamp"] = value
        else:
            merged[key] = value
    return merged


class ContentDigest:
    """The MD5 and the CRC-32 of every 1 MiB block of a byte stream, fed in order."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self._crcs: list[int] = []
        self._crc = 0
        self._block_used = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.md5.update(view)
        while view:
            room = BLOCK - self._block_used
            piece = view[:room]
            self._crc = zlib.crc32(piece, self._crc)
            self._block_used += len(piece)
            if self._block_used == BLOCK:
                self._crcs.append(self._crc)
                self._crc = 0
                self._block_used = 0
            view = view[room:]

    @property
    def etag(self) -> str:
        return self.md5.hexdigest()

    def block_crcs(self) -> list[int]:
        """One CRC-32 per block, the last (partial) block included."""
        return [*self._crcs, self._crc] if self._block_used else list(self._crcs)


class DiskWriter:
    """A ``.data`` file being written: bytes hashed (MD5) and block-checksummed as they come,
    unless the caller computes that :class:`ContentDigest` once for several replicas."""

    def __init__(
        self,
        disk: ObjectDisk,
        device: str,
        part: int,
        name_hash: str,
        timestamp: str,
        tmp: Path,
        fd: int,
        *,
        hashing: bool = True,
    ):
        self.disk = disk
        self.device = device
        self.part = part
        self.name_hash = name_hash
        self.timestamp = timestamp
        self.tmp = tmp
        self.fd: int | None = fd
        self.digest = ContentDigest() if hashing else None
        self.size = 0
        self._flushed = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self.fd is not None
        if self.digest is not None:
            self.digest.update(data)
        try:
            write_all(self.fd, data)
        except OSError as exc:
            self.abort()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOENT):
                raise DeviceUnavailable(str(exc)) from None
            raise
        self.size += len(data)
        if self.size - self._flushed >= WRITEBACK_EVERY:
            os.posix_fadvise(
                self.fd, self._flushed, self.size - self._flushed, os.POSIX_FADV_DONTNEED
            )
            self._flushed = self.size

    def commit(
        self,
        metadata: dict[str, Any],
        expected_etag: str | None = None,
        computed: ContentDigest | None = None,
    ) -> str:
        """Make the object durable and visible; returns its ETag.

        ``computed`` is the digest of exactly the bytes written, for a writer not hashing.
        """
        assert self.fd is not None
        digest = self.digest or computed
        if digest is None:
            self.abort()
            raise DiskError("no digest for an unhashed write")
        etag = digest.etag
        if expected_etag and expected_etag.strip('"').lower() != etag:
            self.abort()
            raise EtagMismatch(etag)
        crcs = digest.block_crcs()
        metadata = {
            **metadata,
            "x-timestamp": self.timestamp,
            "etag": etag,
            "content-length": self.size,
            CRC_KEY: crcs,
        }
        try:
            write_all(self.fd, encode_trailer(metadata))
            os.fdatasync(self.fd)
        except OSError as exc:
            self.abort()
            raise DeviceUnavailable(str(exc)) from None
        os.close(self.fd)
        self.fd = None
        try:
            self.disk._place(
                self.device, self.part, self.name_hash, self.tmp, f"{self.timestamp}.data"
            )
        except DiskError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            raise
        return etag

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class DiskReader:
    """An open ``.data`` file; blocks are checked against their CRC before they are returned."""

    def __init__(
        self,
        disk: ObjectDisk,
        device: str,
        part: int,
        name_hash: str,
        fd: int,
        size: int,
        metadata: dict[str, Any],
    ):
        self.disk = disk
        self.device = device
        self.part = part
        self.name_hash = name_hash
        self.fd: int | None = fd
        self.size = size
        self.metadata = metadata
        self.crcs: list[int] = list(metadata.get(CRC_KEY, []))

    @property
    def timestamp(self) -> str:
        return str(self.metadata["x-timestamp"])

    def read_block(self, index: int) -> bytes:
        """Block ``index``, verified; quarantines the object and raises when it is corrupt."""
        assert self.fd is not None
        expected_len = min(BLOCK, self.size - index * BLOCK)
        data = os.pread(self.fd, expected_len, index * BLOCK)
        if (
            len(data) != expected_len
            or index >= len(self.crcs)
            or zlib.crc32(data) != self.crcs[index]
        ):
            self.close()
            self.disk.quarantine(self.device, self.part, self.name_hash)
            raise Quarantined(self.name_hash)
        return data

    def read_range(self, start: int, end: int, max_chunk: int = BLOCK) -> Iterator[bytes]:
        """Verified bytes ``[start, end)`` in chunks of at most one block."""
        position = start
        while position < end:
            index = position // BLOCK
            block = self.read_block(index)
            offset = position - index * BLOCK
            piece = block[offset : offset + min(end - position, max_chunk)]
            position += len(piece)
            yield piece

    def verify(self) -> bool:
        """Re-read everything: every block's CRC and the MD5 against the ETag."""
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            for piece in self.read_range(0, self.size):
                md5.update(piece)
        except Quarantined:
            return False
        if md5.hexdigest() != self.metadata.get("etag"):
            self.close()
            self.disk.quarantine(self.device, self.part, self.name_hash)
            return False
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
