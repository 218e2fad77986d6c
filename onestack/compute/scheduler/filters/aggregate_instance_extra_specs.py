"""AggregateInstanceExtraSpecsFilter: flavor extra specs against aggregate metadata.

Keys scoped ``aggregate_instance_extra_specs:`` and unscoped keys must each be matched by
a value of that key in one of the host's aggregates; keys of other scopes are ignored.
"""

from __future__ import annotations

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec
from onestack.core import extra_specs

SCOPE = "aggregate_instance_extra_specs"


def _requirements(spec: RequestSpec) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for key, requirement in spec.flavor.extra_specs.items():
        scope, sep, rest = key.partition(":")
        if not sep:
            wanted[key] = requirement
        elif scope == SCOPE:
            wanted[rest] = requirement
    return wanted


class AggregateInstanceExtraSpecsFilter(HostFilter):
    """Hosts whose aggregates carry metadata matching the flavor's extra specs."""

    run_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        return bool(_requirements(spec))

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        metadata = host.aggregate_metadata()
        for key, requirement in _requirements(spec).items():
            values = metadata.get(key)
            if not values:
                return False
            if not any(extra_specs.matches(value, requirement) for value in values):
                return False
        return True
