"""Scheduler filters, one per module: each says whether a backend can take a request."""

from __future__ import annotations

from collections.abc import Callable

from onestack.volume.scheduler.filters import (
    affinity,
    availability_zone,
    capabilities,
    capacity,
    service_up,
    source_backend,
)
from onestack.volume.scheduler.state import BackendState, RequestSpec

Filter = Callable[[BackendState, RequestSpec], bool]

# (name, filter): the name appears in the reason a request found no backend.
FILTERS: list[tuple[str, Filter]] = [
    ("ServiceUpFilter", service_up.passes),
    ("AvailabilityZoneFilter", availability_zone.passes),
    ("SourceBackendFilter", source_backend.passes),
    ("CapacityFilter", capacity.passes),
    ("CapabilitiesFilter", capabilities.passes),
    ("AffinityFilter", affinity.passes),
]
