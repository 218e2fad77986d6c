"""What the system tests need from the host: root and some tools."""

from __future__ import annotations

import os
import shutil

import pytest


def require(*tools: str, what: str = "this system test", lacking: list[str] | None = None) -> None:
    """Skip the calling test module without root, one of ``tools`` or with anything
    ``lacking`` (fail under CI=true, where a skip would hide that the machine was not set up)."""
    missing = [tool for tool in tools if shutil.which(tool) is None] + (lacking or [])
    if os.geteuid() != 0:
        missing.append("root")
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"{what} needs {', '.join(missing)}", pytrace=False)
    if missing:
        pytest.skip(f"needs {', '.join(missing)}", allow_module_level=True)
