"""Matching a volume type's extra spec against a backend capability, with Cinder's operators.

``"<is> True"``, ``"<in> ssd"``, ``"<or> a <or> b"``, ``">= 10"``, ``"s== text"``,
``"<all-in> a b"``; a bare number means "at least"; anything else must be equal.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
TEXTUAL: dict[str, Callable[[str, str], bool]] = {
    "s==": operator.eq,
    "s!=": operator.ne,
    "s>=": operator.ge,
    "s<=": operator.le,
    "s>": operator.gt,
    "s<": operator.lt,
}


def _as_bool(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def matches(capability: Any, requirement: str) -> bool:
    """Whether a backend's ``capability`` satisfies an extra spec ``requirement``."""
    words = str(requirement).split()
    if not words:
        return str(capability) == str(requirement)
    op, rest = words[0], " ".join(words[1:])
    if op == "<is>":
        return _as_bool(capability) == _as_bool(rest)
    if op == "<in>":
        return rest in str(capability)
    if op == "<all-in>":
        members = capability if isinstance(capability, list) else str(capability).split()
        return all(word in members for word in words[1:])
    if op == "<or>":
        choices = [c.strip() for c in str(requirement).split("<or>") if c.strip()]
        return str(capability) in choices
    if op in TEXTUAL:
        return TEXTUAL[op](str(capability), rest)
    if op in NUMERIC:
        have, want = _as_float(capability), _as_float(rest)
        return have is not None and want is not None and NUMERIC[op](have, want)
    have, want = _as_float(capability), _as_float(requirement)
    if have is not None and want is not None and not isinstance(capability, bool):
        return have >= want
    if isinstance(capability, bool):
        return capability == _as_bool(requirement)
    return str(capability) == str(requirement)
