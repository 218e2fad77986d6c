"""Matching a flavor extra spec against a host value, with Nova's operators.

``"= 4"`` (at least), ``"== 4"``, ``"!= 4"``, ``">= 4"``, ``"<= 4"``, ``"s== text"``,
``"s!= text"``, ``"s>= text"`` (and ``s<``, ``s<=``, ``s>``), ``"<in> sub"``,
``"<all-in> a b"``, ``"<or> a <or> b"``; no operator: the values must be equal as text.
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
}
TEXTUAL: dict[str, Callable[[str, str], bool]] = {
    "s==": operator.eq,
    "s!=": operator.ne,
    "s>=": operator.ge,
    "s<=": operator.le,
    "s>": operator.gt,
    "s<": operator.lt,
}


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def matches(value: Any, requirement: str) -> bool:
    """Whether a host's ``value`` satisfies the extra spec ``requirement``."""
    words = str(requirement).split()
    if not words:
        return str(value) == str(requirement)
    op, rest = words[0], " ".join(words[1:])
    if op == "<in>":
        return rest in str(value)
    if op == "<all-in>":
        members = value if isinstance(value, (list, set, tuple)) else str(value).split()
        members = {str(member) for member in members}
        return bool(words[1:]) and all(word in members for word in words[1:])
    if op == "<or>":
        choices = [choice.strip() for choice in str(requirement).split("<or>")]
        return str(value) in [choice for choice in choices if choice]
    if op in TEXTUAL:
        return TEXTUAL[op](str(value), rest)
    if op in NUMERIC:
        have, want = _as_float(value), _as_float(rest)
        return have is not None and want is not None and NUMERIC[op](have, want)
    return str(value) == str(requirement)
