"""Operator commands: db sync and Fernet key rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from onestack.cli.main import main


def test_db_sync_creates_the_schema_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "sync", "--data-dir", str(tmp_path)]) == 0
    assert main(["db", "sync", "identity", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "identity.db").exists()
    assert "identity: database at the newest revision" in capsys.readouterr().out
    assert main(["db", "sync", "nonsense", "--data-dir", str(tmp_path)]) == 2


def test_fernet_setup_and_rotate(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert main(["identity", "fernet-setup", "--key-repository", str(keys)]) == 0
    assert sorted(p.name for p in keys.iterdir()) == ["0", "1"]
    assert main(["identity", "fernet-rotate", "--key-repository", str(keys)]) == 0
    assert sorted(p.name for p in keys.iterdir()) == ["0", "1", "2"]


def test_unknown_bus_url_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["up", "--data-dir", str(tmp_path), "--bus", "kafka://x", "--port", "1"])
    assert code == 2
    assert "unsupported bus URL" in capsys.readouterr().err
