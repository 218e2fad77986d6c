"""Scheduler hints ``same_host`` / ``different_host``: next to (or away from) given volumes.

The API resolves the hinted volume ids to their backends before scheduling.
"""

from __future__ import annotations

from onestack.volume.scheduler.state import BackendState, RequestSpec


def _backend(host: str) -> str:
    return host.partition("#")[0]


def passes(backend: BackendState, spec: RequestSpec) -> bool:
    if spec.same_host and any(_backend(h) != backend.host for h in spec.same_host):
        return False
    return not any(_backend(h) == backend.host for h in spec.different_host)
