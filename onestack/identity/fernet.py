"""The Fernet key repository and the token format built on it.

Keys live in numbered files as Keystone lays them out: ``0`` is the staged key,
the highest number is the primary (used to encrypt), the rest are secondary
(still accepted). Rotation promotes the staged key and prunes old ones, so
processes sharing the repository keep validating each other's tokens.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import msgpack
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from onestack.core.asgi.errors import Unauthorized


class KeyRepository:
    """Numbered Fernet key files in one directory."""

    def __init__(self, path: Path, max_active_keys: int = 3):
        self.path = path
        self.max_active_keys = max_active_keys

    def _numbers(self) -> list[int]:
        return sorted(int(p.name) for p in self.path.iterdir() if p.name.isdigit())

    def _write(self, number: int, key: bytes) -> None:
        tmp = self.path / f".{number}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.rename(self.path / str(number))

    def setup(self) -> bool:
        """Create the repository with a staged and a primary key; False if it existed."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._numbers():
            return False
        self._write(0, Fernet.generate_key())
        self._write(1, Fernet.generate_key())
        return True

    def rotate(self) -> int:
        """Promote the staged key to primary, stage a new one, prune the oldest; new primary."""
        numbers = self._numbers()
        if not numbers:
            raise RuntimeError(f"no Fernet keys in {self.path}; run setup first")
        primary = max(numbers) + 1
        (self.path / "0").rename(self.path / str(primary))
        self._write(0, Fernet.generate_key())
        secondaries = [n for n in self._numbers() if n not in (0, primary)]
        excess = len(secondaries) + 2 - self.max_active_keys
        for number in secondaries[: max(excess, 0)]:
            (self.path / str(number)).unlink()
        return primary

    def load_keys(self) -> list[bytes]:
        """Keys newest first: the primary, then secondaries, then the staged key."""
        numbers = self._numbers()
        ordered = [*sorted((n for n in numbers if n != 0), reverse=True), 0]
        return [(self.path / str(n)).read_bytes().strip() for n in ordered if n in numbers]

    def signature(self) -> tuple[tuple[str, float], ...]:
        """Names and modification times; changes whenever a rotation happens."""
        return tuple(
            sorted((p.name, p.stat().st_mtime) for p in self.path.iterdir() if p.name.isdigit())
        )


@dataclass(frozen=True)
class TokenPayload:
    """What a token carries: no server-side state is needed to read it."""

    user_id: str
    methods: list[str]
    issued_at: float
    expires_at: float
    audit_ids: list[str]
    project_id: str | None = None
    domain_id: str | None = None
    system: bool = False
    app_cred_id: str | None = None


METHODS = ("password", "token", "application_credential", "totp", "mapped", "ec2credential")


def _pack_id(value: str | None) -> bytes | str | None:
    """UUID hex ids travel as 16 bytes, others (like ``default``) as text."""
    if value is not None and len(value) == 32:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    return value


def _unpack_id(value: bytes | str | None) -> str | None:
    return value.hex() if isinstance(value, bytes) else value


def _pack_audit(audit_id: str) -> bytes:
    return base64.urlsafe_b64decode(audit_id + "==")


def _unpack_audit(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TokenFormatter:
    """Encrypts payloads into Fernet tokens and reads them back, reloading keys on rotation.

    The payload is msgpack with binary ids, which keeps tokens under 255 characters.
    """

    def __init__(self, repository: KeyRepository):
        self.repository = repository
        self._signature: tuple[tuple[str, float], ...] = ()
        self._fernet: MultiFernet | None = None

    def _crypto(self) -> MultiFernet:
        signature = self.repository.signature()
        if self._fernet is None or signature != self._signature:
            self._fernet = MultiFernet([Fernet(k) for k in self.repository.load_keys()])
            self._signature = signature
        return self._fernet

    def reload_if_rotated(self) -> None:
        """Pick up a rotation made by another process (called periodically, not per token)."""
        self._crypto()

    def create(self, payload: TokenPayload) -> str:
        """The token string for ``payload``."""
        methods = sum(1 << METHODS.index(m) for m in set(payload.methods))
        fields = [
            _pack_id(payload.user_id),
            methods,
            payload.issued_at,
            payload.expires_at,
            [_pack_audit(a) for a in payload.audit_ids],
            _pack_id(payload.project_id),
            _pack_id(payload.domain_id),
            payload.system,
            _pack_id(payload.app_cred_id),
        ]
        crypto = self._fernet or self._crypto()
        return crypto.encrypt(msgpack.packb(fields)).decode().rstrip("=")

    def read(self, token: str) -> TokenPayload:
        """The payload of ``token``; 401 when it is not ours or was tampered with."""
        padded = token + "=" * (-len(token) % 4)
        crypto = self._fernet or self._crypto()
        try:
            fields = msgpack.unpackb(crypto.decrypt(padded.encode()))
            user_id = _unpack_id(fields[0])
            if user_id is None:
                raise ValueError("token without a user")
            return TokenPayload(
                user_id=user_id,
                methods=[m for i, m in enumerate(METHODS) if fields[1] & (1 << i)],
                issued_at=float(fields[2]),
                expires_at=float(fields[3]),
                audit_ids=[_unpack_audit(a) for a in fields[4]],
                project_id=_unpack_id(fields[5]),
                domain_id=_unpack_id(fields[6]),
                system=bool(fields[7]),
                app_cred_id=_unpack_id(fields[8]),
            )
        except (
            InvalidToken,
            ValueError,
            TypeError,
            IndexError,
            UnicodeEncodeError,
            msgpack.UnpackException,
        ):
            raise Unauthorized("The request you have made requires authentication.") from None


class SecretBox:
    """Encrypts stored credential blobs with the keys of a second repository."""

    def __init__(self, repository: KeyRepository):
        self.repository = repository
        self._crypto: MultiFernet | None = None

    def _fernet(self) -> MultiFernet:
        if self._crypto is None:
            self._crypto = MultiFernet([Fernet(k) for k in self.repository.load_keys()])
        return self._crypto

    def seal(self, plaintext: str) -> str:
        """The ciphertext of ``plaintext``."""
        return self._fernet().encrypt(plaintext.encode()).decode()

    def open(self, ciphertext: str) -> str:
        """The plaintext of a sealed blob."""
        return self._fernet().decrypt(ciphertext.encode()).decode()
