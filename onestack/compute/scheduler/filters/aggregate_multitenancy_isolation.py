"""AggregateMultiTenancyIsolation: aggregates reserved for some projects.

A host in an aggregate whose metadata has ``filter_tenant_id`` (or any key starting with
it, e.g. ``filter_tenant_id2``; comma-separated projects) takes only those projects'
servers. Hosts in no such aggregate take anyone's.
"""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec

KEY_PREFIX = "filter_tenant_id"


class AggregateMultiTenancyIsolation(HostFilter):
    """Hosts isolated to other projects are out."""

    run_once_per_request = True

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        if not host.aggregates:
            return True
        allowed: set[str] = set()
        for aggregate in host.aggregates:
            for key, value in aggregate.metadata.items():
                if key.startswith(KEY_PREFIX):
                    allowed.update(part.strip() for part in str(value).split(","))
        return not allowed or spec.project_id in allowed
