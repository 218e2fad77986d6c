"""ServerGroupAntiAffinityFilter: an ``anti-affinity`` group spreads over hosts.

At most ``max_server_per_host`` members (rule of microversion 2.64; default 1) per host.
"""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec


class ServerGroupAntiAffinityFilter(HostFilter):
    """Hosts already holding the maximum number of the group's members are out."""

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group is not None and spec.group.policy == "anti-affinity"

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        group = spec.group
        if group is None:
            return True
        # ``hosts`` (when known) lists every host with a member: the others pass at once.
        if not host.instances or (group.hosts and host.host not in group.hosts):
            return True
        limit = group.max_server_per_host or 1
        members = sum(
            1
            for uuid, group_uuid in host.instances.items()
            if group_uuid == group.uuid or uuid in group.members
        )
        return members < limit
