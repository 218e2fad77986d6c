"""Scheduler filters, one per module, and how the enabled ones are found by name.

Built-in filters are listed in ``BUILTIN``; others plug in through the entry point group
``onestack.compute.scheduler.filters`` (name -> a ``HostFilter`` subclass).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from onestack.compute.scheduler.filters.aggregate_instance_extra_specs import (
    AggregateInstanceExtraSpecsFilter,
)
from onestack.compute.scheduler.filters.aggregate_multitenancy_isolation import (
    AggregateMultiTenancyIsolation,
)
from onestack.compute.scheduler.filters.availability_zone import AvailabilityZoneFilter
from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.filters.compute import ComputeFilter
from onestack.compute.scheduler.filters.compute_capabilities import ComputeCapabilitiesFilter
from onestack.compute.scheduler.filters.different_host import DifferentHostFilter
from onestack.compute.scheduler.filters.image_properties import ImagePropertiesFilter
from onestack.compute.scheduler.filters.same_host import SameHostFilter
from onestack.compute.scheduler.filters.server_group_affinity import ServerGroupAffinityFilter
from onestack.compute.scheduler.filters.server_group_anti_affinity import (
    ServerGroupAntiAffinityFilter,
)

ENTRY_POINT_GROUP = "onestack.compute.scheduler.filters"

BUILTIN: dict[str, type[HostFilter]] = {
    cls.__name__: cls
    for cls in (
        ComputeFilter,
        AvailabilityZoneFilter,
        AggregateInstanceExtraSpecsFilter,
        ComputeCapabilitiesFilter,
        ImagePropertiesFilter,
        ServerGroupAffinityFilter,
        ServerGroupAntiAffinityFilter,
        SameHostFilter,
        DifferentHostFilter,
        AggregateMultiTenancyIsolation,
    )
}


def load_filters(names: list[str]) -> list[HostFilter]:
    """Instances of the named filters, in order; an unknown name is a ValueError."""
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    loaded: list[HostFilter] = []
    for name in names:
        if name in BUILTIN:
            loaded.append(BUILTIN[name]())
        elif name in plugins:
            cls = plugins[name].load()
            if not (isinstance(cls, type) and issubclass(cls, HostFilter)):
                raise ValueError(f"scheduler filter {name!r} is not a HostFilter")
            loaded.append(cls())
        else:
            raise ValueError(f"unknown scheduler filter {name!r}")
    return loaded


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "HostFilter", "load_filters"]
