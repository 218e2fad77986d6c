"""Weighers: the filtered backends in order of preference.

Capacity spreads volumes over backends (most room left first, as Cinder's
default CapacityWeigher); equal candidates take turns (round robin).
"""

from __future__ import annotations

import itertools

from onestack.volume.scheduler.state import BackendState

_turn = itertools.count()


def ordered(backends: list[BackendState]) -> list[BackendState]:
    """Best first: most virtual free capacity; ties rotated so each gets its turn."""
    if not backends:
        return []
    by_name = sorted(backends, key=lambda b: b.host)
    shift = next(_turn) % len(by_name)
    rotated = by_name[shift:] + by_name[:shift]
    # sorted() is stable: among equal capacities the rotation decides.
    return sorted(rotated, key=lambda b: -round(b.virtual_free_gb(), 1))
