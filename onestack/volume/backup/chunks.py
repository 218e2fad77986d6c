"""The backup format: fixed-size chunks, each hashed (SHA-256) and compressed, one object each.

A backup ``P`` is stored in its container as

- ``P-00000``, ``P-00001``, ...: the chunks this backup had to send, compressed;
- ``P_metadata``: JSON naming, for every chunk of the volume, its SHA-256 and the
  object that holds its data — one of this backup's, one of a parent's (an
  incremental sends only chunks whose hash changed), or none for a chunk of zeros.

A restore therefore reads one metadata object and then exactly the objects it
names, whatever the depth of the chain, and checks every chunk's hash.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT_VERSION = 1


@dataclass
class ChunkRecord:
    """Where one chunk of the volume is kept."""

    index: int
    sha256: str
    length: int
    # The object holding the (compressed) data; None for a chunk of zeros.
    object: str | None
    compression: str = "zlib"


@dataclass
class BackupMetadata:
    """The ``_metadata`` object of a backup."""

    backup_id: str
    volume_id: str
    size_bytes: int
    chunk_size: int
    parent_id: str | None = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    version: int = FORMAT_VERSION
    # What the volume was (``bootable``, ``image_metadata``): a restore gives it back, as
    # Cinder restores a bootable volume's flag and Glance metadata.
    volume_meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> BackupMetadata:
        raw: dict[str, Any] = json.loads(data)
        chunks = [ChunkRecord(**c) for c in raw.pop("chunks", [])]
        return cls(**raw, chunks=chunks)


def metadata_name(prefix: str) -> str:
    return f"{prefix}_metadata"


def chunk_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(data: bytes, compression: str) -> bytes:
    """Compress a chunk for storage (level 1: the cost is in the I/O, not the ratio)."""
    return zlib.compress(data, 1) if compression == "zlib" else data


def unpack(data: bytes, compression: str) -> bytes:
    return zlib.decompress(data) if compression == "zlib" else data


ZERO_DIGESTS: dict[int, str] = {}


def zero_digest(length: int) -> str:
    """The SHA-256 of ``length`` zero bytes (cached: chunks are mostly one size)."""
    if length not in ZERO_DIGESTS:
        ZERO_DIGESTS[length] = digest(bytes(length))
    return ZERO_DIGESTS[length]
