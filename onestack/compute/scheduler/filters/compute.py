"""ComputeFilter: only hosts whose compute service is enabled and up."""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec


class ComputeFilter(HostFilter):
    """Hosts whose service is disabled or has stopped heartbeating are out."""

    run_once_per_request = True

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.service_up and not host.service_disabled
