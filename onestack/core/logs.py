"""Logging set-up: everything to a file in the data dir, warnings (or all, verbose) to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(log_file: Path | None, *, level: str = "INFO", verbose: bool = False) -> None:
    """Send logs to ``log_file`` and to stderr; safe to call once per process."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT))
    console.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.addHandler(console)
    for noisy in ("aiormq", "aio_pika", "uvicorn.error", "oslo_policy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
