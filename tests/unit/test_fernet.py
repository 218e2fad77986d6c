"""Fernet key repository rotation and the token payload format."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onestack.core.asgi.errors import Unauthorized
from onestack.identity.fernet import KeyRepository, TokenFormatter, TokenPayload
from onestack.identity.tokens import new_audit_id


def payload(**overrides: object) -> TokenPayload:
    fields: dict[str, object] = {
        "user_id": "0123456789abcdef0123456789abcdef",
        "methods": ["password", "token"],
        "issued_at": time.time(),
        "expires_at": time.time() + 3600,
        "audit_ids": [new_audit_id()],
        "project_id": "fedcba9876543210fedcba9876543210",
    }
    fields.update(overrides)
    return TokenPayload(**fields)  # type: ignore[arg-type]


def test_setup_creates_staged_and_primary_once(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path / "keys")
    assert repo.setup() is True
    assert repo.setup() is False
    assert sorted(p.name for p in repo.path.iterdir()) == ["0", "1"]
    assert oct(repo.path.joinpath("1").stat().st_mode)[-3:] == "600"


def test_round_trip_keeps_every_field_and_stays_short(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path)
    repo.setup()
    formatter = TokenFormatter(repo)
    original = payload(domain_id="default", app_cred_id=None, system=False)
    token = formatter.create(original)
    assert len(token) < 255
    assert formatter.read(token) == original


def test_rotation_keeps_recent_tokens_valid_and_prunes_old_keys(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path, max_active_keys=3)
    repo.setup()
    formatter = TokenFormatter(repo)
    first = formatter.create(payload())
    assert repo.rotate() == 2
    formatter.reload_if_rotated()
    assert formatter.read(first).user_id.startswith("0123")
    second = formatter.create(payload())
    repo.rotate()
    repo.rotate()
    formatter.reload_if_rotated()
    assert len(repo.load_keys()) == 3
    with pytest.raises(Unauthorized):
        formatter.read(first)
    with pytest.raises(Unauthorized):
        formatter.read(second)
    assert formatter.read(formatter.create(payload())).methods == ["password", "token"]


def test_another_process_validates_with_the_shared_repository(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path)
    repo.setup()
    token = TokenFormatter(repo).create(payload())
    assert TokenFormatter(KeyRepository(tmp_path)).read(token).project_id is not None


@pytest.mark.parametrize("token", ["", "abc", "gAAAAAB" + "A" * 120])
def test_garbage_is_unauthorized(tmp_path: Path, token: str) -> None:
    repo = KeyRepository(tmp_path)
    repo.setup()
    with pytest.raises(Unauthorized):
        TokenFormatter(repo).read(token)


def test_tampered_token_is_unauthorized(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path)
    repo.setup()
    formatter = TokenFormatter(repo)
    token = formatter.create(payload())
    flipped = token[:50] + ("A" if token[50] != "A" else "B") + token[51:]
    with pytest.raises(Unauthorized):
        formatter.read(flipped)
