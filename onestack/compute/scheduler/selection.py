"""Choosing hosts: filter, weigh, pick among the best, consume, repeat per instance."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from onestack.compute.scheduler.filters import HostFilter, load_filters
from onestack.compute.scheduler.state import HostState, RequestSpec
from onestack.compute.scheduler.weighers import HostWeigher, load_weighers, total_weights
from onestack.core.config import ComputeSchedulerSettings

NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


class NoValidHost(Exception):
    """No host can take (all of) the request; ``detail`` says which step emptied the list."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(NO_VALID_HOST)
        self.detail = detail


@dataclass
class Selection:
    """The host chosen for one instance, and the next-best hosts to retry on."""

    host: HostState
    alternates: list[HostState] = field(default_factory=list)


class FilterScheduler:
    """The configured filters and weighers, ready to place requests."""

    def __init__(
        self,
        settings: ComputeSchedulerSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        settings = settings or ComputeSchedulerSettings()
        self.filters: list[HostFilter] = load_filters(settings.enabled_filters)
        self.weighers: list[tuple[HostWeigher, float]] = [
            (weigher, float(getattr(settings, weigher.multiplier_setting)))
            for weigher in load_weighers(settings.enabled_weighers)
        ]
        self.host_subset_size = settings.host_subset_size
        self.rng = rng or random.Random()

    def select_destinations(
        self,
        spec: RequestSpec,
        host_states: Sequence[HostState],
        num: int | None = None,
        max_alternates: int = 2,
    ) -> list[Selection]:
        """One ``Selection`` per instance, in order, or ``NoValidHost`` for the whole request.

        Each choice is consumed from its ``HostState`` (resources, instances, group
        membership), so later instances of the same request see it: that is how a
        multi-instance anti-affinity request spreads. On ``NoValidHost`` the states are
        left partly consumed; build them afresh for the next request.
        """
        count = num if num is not None else spec.num_instances
        candidates, forced, trail = self._narrow(spec, host_states)
        dynamic: list[HostFilter] = []
        if not forced:
            for host_filter in self.filters:
                if not host_filter.applies(spec):
                    continue
                if host_filter.run_once_per_request:
                    candidates = [host for host in candidates if host_filter.passes(host, spec)]
                    trail.append(f"{host_filter.name}: {len(candidates)}")
                else:
                    dynamic.append(host_filter)
        selections: list[Selection] = []
        vcpus, ram_mb, disk_gb = spec.flavor.vcpus, spec.flavor.ram_mb, spec.flavor.disk_gb
        for index in range(count):
            eligible = [
                host
                for host in candidates
                if host.fits_sizes(vcpus, ram_mb, disk_gb)
                and all(f.passes(host, spec) for f in dynamic)
            ]
            if not eligible:
                names = ", ".join(f.name for f in dynamic) or "resources"
                raise NoValidHost(
                    f"instance {index + 1} of {count}: {'; '.join(trail)}; none left after {names}"
                )
            weights = total_weights(self.weighers, eligible, spec)
            order = sorted(range(len(eligible)), key=weights.__getitem__, reverse=True)
            pick = self.rng.choice(order[: self.host_subset_size])
            chosen = eligible[pick]
            alternates = [eligible[i] for i in order if i != pick][:max_alternates]
            instance_uuid = (
                spec.instance_uuids[index]
                if index < len(spec.instance_uuids)
                else str(uuid.uuid4())
            )
            chosen.consume(spec, instance_uuid)
            selections.append(Selection(chosen, alternates))
        return selections

    @staticmethod
    def _narrow(
        spec: RequestSpec, host_states: Sequence[HostState]
    ) -> tuple[list[HostState], bool, list[str]]:
        """Hosts left after ignores, forced and requested hosts; whether filters are
        bypassed (a forced host); the trail of counts for the failure detail."""
        candidates = [host for host in host_states if host.host not in spec.ignore_hosts]
        trail = [f"{len(candidates)} hosts"]
        forced = bool(spec.force_hosts or spec.force_nodes)
        if spec.force_hosts:
            candidates = [host for host in candidates if host.host in spec.force_hosts]
            trail.append(f"forced host: {len(candidates)}")
        if spec.force_nodes:
            candidates = [host for host in candidates if host.node in spec.force_nodes]
            trail.append(f"forced node: {len(candidates)}")
        if spec.requested_host:
            candidates = [host for host in candidates if host.host == spec.requested_host]
            trail.append(f"requested host: {len(candidates)}")
        if spec.requested_node:
            candidates = [host for host in candidates if host.node == spec.requested_node]
            trail.append(f"requested node: {len(candidates)}")
        return candidates, forced, trail


def select_destinations(
    spec: RequestSpec,
    host_states: Sequence[HostState],
    num: int | None = None,
    settings: ComputeSchedulerSettings | None = None,
) -> list[Selection]:
    """Place ``num`` instances of ``spec`` (default ``spec.num_instances``) with the
    filters and weighers of ``settings`` (default: the stock configuration)."""
    return FilterScheduler(settings).select_destinations(spec, host_states, num)
