"""AvailabilityZoneFilter: only hosts in the zone the request names."""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec


class AvailabilityZoneFilter(HostFilter):
    """A host's zone comes from its aggregates' ``availability_zone`` metadata."""

    run_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.availability_zone)

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.availability_zone == spec.availability_zone
