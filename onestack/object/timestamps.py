"""Swift's timestamps: ``1700000000.12345`` strings that order every write of a name."""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_last = 0.0
RESOLUTION = 0.00001


def normalize(value: float | str) -> str:
    """The canonical 16-character form (``%016.05f``); ValueError for garbage."""
    number = float(value)
    if number < 0 or number != number or number > 9999999999.99999:
        raise ValueError(f"invalid timestamp {value!r}")
    return f"{number:016.5f}"


def now() -> str:
    """A timestamp later than every one this process issued before."""
    global _last
    with _lock:
        current = max(time.time(), _last + RESOLUTION)
        _last = current
    return normalize(current)


def to_float(value: str) -> float:
    return float(value)
