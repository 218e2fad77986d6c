"""ComputeCapabilitiesFilter: flavor extra specs against the host's own attributes.

Keys scoped ``capabilities:`` and unscoped keys name a host attribute, with ``:`` walking
into nested values (``capabilities:cpu_info:arch``); keys of other scopes are ignored.
"""

from __future__ import annotations

from typing import Any

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec
from onestack.core import extra_specs

SCOPE = "capabilities"


def _requirements(spec: RequestSpec) -> list[tuple[list[str], str]]:
    wanted: list[tuple[list[str], str]] = []
    for key, requirement in spec.flavor.extra_specs.items():
        path = key.split(":")
        if len(path) > 1:
            if path[0] != SCOPE:
                continue
            path = path[1:]
        wanted.append((path, requirement))
    return wanted


def _lookup(host: HostState, path: list[str]) -> Any:
    value: Any = getattr(host, path[0], None) if not path[0].startswith("_") else None
    for part in path[1:]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class ComputeCapabilitiesFilter(HostFilter):
    """Hosts whose attributes (hypervisor type, cpu_info…) satisfy the extra specs."""

    run_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        return bool(_requirements(spec))

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        for path, requirement in _requirements(spec):
            value = _lookup(host, path)
            if value is None or callable(value):
                return False
            if not extra_specs.matches(value, requirement):
                return False
        return True
