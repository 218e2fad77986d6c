"""SameHostFilter: the ``same_host`` hint puts the server beside the named servers."""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec


class SameHostFilter(HostFilter):
    """Hosts running at least one of the servers the hint names."""

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.same_host)

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        return any(uuid in host.instances for uuid in spec.same_host)
