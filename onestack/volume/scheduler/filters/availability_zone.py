"""A volume asked for in an availability zone goes to a backend of that zone."""

from __future__ import annotations

from onestack.volume.scheduler.state import BackendState, RequestSpec


def passes(backend: BackendState, spec: RequestSpec) -> bool:
    return spec.availability_zone is None or backend.availability_zone == spec.availability_zone
