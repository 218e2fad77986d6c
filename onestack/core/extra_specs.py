"""Matching an extra spec requirement against a host or backend value.

The operator language Nova's flavor extra specs and Cinder's volume type extra
specs share: ``"= 4"`` (at least), ``"== 4"``, ``"!= 4"``, ``">= 4"``, ``"<= 4"``,
``"> 4"``, ``"< 4"``, ``"s== text"`` (and ``s!=``, ``s>=``, ``s<=``, ``s>``, ``s<``),
``"<is> True"``, ``"<in> sub"``, ``"<all-in> a b"``, ``"<or> a <or> b"``. A
requirement without an operator must equal the value as text, except that
Cinder reads a bare number as "at least" and a bare boolean as a boolean.
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


def matches(value: Any, requirement: str, *, bare_is_minimum: bool = False) -> bool:
    """Whether ``value`` satisfies ``requirement``; ``bare_is_minimum`` is Cinder's reading."""
    words = str(requirement).split()
    if not words:
        return str(value) == str(requirement)
    op, rest = words[0], " ".join(words[1:])
    if op == "<is>":
        return _as_bool(value) == _as_bool(rest)
    if op == "<in>":
        return rest in str(value)
    if op == "<all-in>":
        members = value if isinstance(value, (list, set, tuple)) else str(value).split()
        present = {str(member) for member in members}
        return bool(words[1:]) and all(word in present for word in words[1:])
    if op == "<or>":
        choices = [choice.strip() for choice in str(requirement).split("<or>")]
        return str(value) in [choice for choice in choices if choice]
    if op in TEXTUAL:
        return TEXTUAL[op](str(value), rest)
    if op in NUMERIC:
        have, want = _as_float(value), _as_float(rest)
        return have is not None and want is not None and NUMERIC[op](have, want)
    if bare_is_minimum:
        if isinstance(value, bool):
            return value == _as_bool(requirement)
        have, want = _as_float(value), _as_float(requirement)
        if have is not None and want is not None:
            return have >= want
    return str(value) == str(requirement)
