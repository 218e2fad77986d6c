"""Configuration from TOML and ONESTACK_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from onestack.core.config import async_url, load_settings


def test_defaults_need_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONESTACK_CONFIG", raising=False)
    settings = load_settings()
    assert settings.port == 8000
    assert settings.bus_url == "memory://"
    assert settings.database_url("identity").startswith("sqlite+aiosqlite:///")


def test_file_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "onestack.toml"
    config.write_text('port = 9000\n[identity]\ntoken_expiration = 60\nregion = "RegionX"\n')
    monkeypatch.setenv("ONESTACK_CONFIG", str(config))
    monkeypatch.setenv("ONESTACK_IDENTITY__TOKEN_EXPIRATION", "120")
    settings = load_settings()
    assert settings.port == 9000
    assert settings.identity.token_expiration == 120
    assert settings.identity.region == "RegionX"


@pytest.mark.parametrize(
    "url,expected",
    [
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("mysql://u@h/db", "mysql+aiomysql://u@h/db"),
        ("mariadb://u@h/db", "mysql+aiomysql://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_async_driver_urls(url: str, expected: str) -> None:
    assert async_url(url) == expected
