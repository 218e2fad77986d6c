"""Volumes from a snapshot or another volume are made on the backend that holds the source."""

from __future__ import annotations

from onestack.volume.scheduler.state import BackendState, RequestSpec


def passes(backend: BackendState, spec: RequestSpec) -> bool:
    return spec.source_host is None or backend.host == spec.source_host.partition("#")[0]
