"""ServerGroupAffinityFilter: an ``affinity`` group's members all go to one host."""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec


class ServerGroupAffinityFilter(HostFilter):
    """Once a member is placed, only the hosts of the group's members pass."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group is not None and spec.group.policy == "affinity"

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        group = spec.group
        return group is None or not group.hosts or host.host in group.hosts
