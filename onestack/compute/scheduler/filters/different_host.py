"""DifferentHostFilter: the ``different_host`` hint keeps the server away from others."""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec


class DifferentHostFilter(HostFilter):
    """Hosts running none of the servers the hint names."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.different_host)

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not any(uuid in host.instances for uuid in spec.different_host)
