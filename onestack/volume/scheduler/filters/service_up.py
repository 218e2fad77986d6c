"""Only backends whose agent is up (heartbeats arrive) and not disabled by the operator."""

from __future__ import annotations

from onestack.volume.scheduler.state import BackendState, RequestSpec


def passes(backend: BackendState, spec: RequestSpec) -> bool:
    return backend.up and not backend.disabled
