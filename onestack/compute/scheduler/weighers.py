"""Weighers: each scores hosts; scores are normalised to 0..1 across the candidates,
multiplied by the weigher's multiplier and summed (Nova's arithmetic).

A positive multiplier prefers hosts with a higher raw score (spreading for RAM/CPU/disk);
a negative one prefers lower (stacking).
"""

from __future__ import annotations

from collections.abc import Sequence

from onestack.compute.scheduler.state import HostState, RequestSpec


class HostWeigher:
    """Scores one host for one request; ``multiplier_setting`` names its multiplier."""

    multiplier_setting = ""

    @property
    def name(self) -> str:
        """The name operators enable the weigher by."""
        return type(self).__name__

    def applies(self, spec: RequestSpec) -> bool:
        """Whether the weigher has anything to say about the request."""
        return True

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        """The raw score of ``host``."""
        raise NotImplementedError


class RAMWeigher(HostWeigher):
    """More free memory scores higher."""

    multiplier_setting = "ram_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_ram_mb


class CPUWeigher(HostWeigher):
    """More free VCPUs score higher."""

    multiplier_setting = "cpu_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_vcpus


class DiskWeigher(HostWeigher):
    """More free disk scores higher."""

    multiplier_setting = "disk_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.free_disk_gb


class IoOpsWeigher(HostWeigher):
    """Busy hosts (builds, moves in flight) score higher; the default multiplier is
    negative, so idle hosts win."""

    multiplier_setting = "io_ops_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return host.num_io_ops


class BuildFailureWeigher(HostWeigher):
    """Hosts that recently failed builds score lower (a large multiplier by default)."""

    multiplier_setting = "build_failure_weight_multiplier"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return -host.failed_builds


def _members_on(host: HostState, spec: RequestSpec) -> int:
    group = spec.group
    if group is None:
        return 0
    return sum(
        1
        for uuid, group_uuid in host.instances.items()
        if group_uuid == group.uuid or uuid in group.members
    )


class ServerGroupSoftAffinityWeigher(HostWeigher):
    """For ``soft-affinity`` groups: hosts with more members score higher."""

    multiplier_setting = "soft_affinity_weight_multiplier"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group is not None and spec.group.policy == "soft-affinity"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return _members_on(host, spec)


class ServerGroupSoftAntiAffinityWeigher(HostWeigher):
    """For ``soft-anti-affinity`` groups: hosts with more members score lower."""

    multiplier_setting = "soft_anti_affinity_weight_multiplier"

    def applies(self, spec: RequestSpec) -> bool:
        return spec.group is not None and spec.group.policy == "soft-anti-affinity"

    def weigh(self, host: HostState, spec: RequestSpec) -> float:
        return -_members_on(host, spec)


BUILTIN: dict[str, type[HostWeigher]] = {
    cls.__name__: cls
    for cls in (
        RAMWeigher,
        CPUWeigher,
        DiskWeigher,
        IoOpsWeigher,
        BuildFailureWeigher,
        ServerGroupSoftAffinityWeigher,
        ServerGroupSoftAntiAffinityWeigher,
    )
}


def load_weighers(names: list[str]) -> list[HostWeigher]:
    """Instances of the named weighers; an unknown name is a ValueError."""
    unknown = [name for name in names if name not in BUILTIN]
    if unknown:
        raise ValueError(f"unknown scheduler weigher(s): {', '.join(unknown)}")
    return [BUILTIN[name]() for name in names]


def normalize(values: Sequence[float]) -> list[float]:
    """Scale to 0..1 (all zero when every value is the same)."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high == low:
        return [0.0] * len(values)
    span = high - low
    return [(value - low) / span for value in values]


def total_weights(
    weighers: Sequence[tuple[HostWeigher, float]],
    hosts: Sequence[HostState],
    spec: RequestSpec,
) -> list[float]:
    """The summed, normalised, multiplied weight of each host (same order as ``hosts``)."""
    totals = [0.0] * len(hosts)
    for weigher, multiplier in weighers:
        if not multiplier or not weigher.applies(spec):
            continue
        weigh = weigher.weigh
        scores = normalize([weigh(host, spec) for host in hosts])
        totals = [total + multiplier * score for total, score in zip(totals, scores, strict=True)]
    return totals
