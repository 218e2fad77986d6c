"""What the scheduler knows: one ``HostState`` per compute node and the ``RequestSpec``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_AVAILABILITY_ZONE = "nova"


@dataclass
class AggregateInfo:
    """A host aggregate the host belongs to, with its metadata."""

    name: str
    uuid: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def availability_zone(self) -> str | None:
        """The zone the aggregate declares, if any."""
        return self.metadata.get("availability_zone") or None


@dataclass
class HostState:
    """One compute node as the scheduler sees it; ``consume`` updates it in place."""

    host: str
    node: str = ""
    uuid: str = ""
    vcpus_total: int = 0
    vcpus_used: int = 0
    ram_total_mb: int = 0
    ram_used_mb: int = 0
    ram_reserved_mb: int = 0
    disk_total_gb: int = 0
    disk_used_gb: int = 0
    cpu_allocation_ratio: float = 16.0
    ram_allocation_ratio: float = 1.5
    disk_allocation_ratio: float = 1.0
    aggregates: list[AggregateInfo] = field(default_factory=list)
    default_availability_zone: str = DEFAULT_AVAILABILITY_ZONE
    service_disabled: bool = False
    service_up: bool = True
    # Server uuid -> the uuid of its server group (None when it has none).
    instances: dict[str, str | None] = field(default_factory=dict)
    failed_builds: int = 0
    num_io_ops: int = 0
    traits: set[str] = field(default_factory=set)
    hypervisor_type: str = ""
    hypervisor_version: int = 0
    cpu_info: dict[str, Any] = field(default_factory=dict)
    # (architecture, hypervisor type, vm mode) triples the host can run.
    supported_instances: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.node:
            self.node = self.host

    @property
    def availability_zone(self) -> str:
        """The zone of the first aggregate that names one, else the default zone."""
        for aggregate in self.aggregates:
            zone = aggregate.availability_zone
            if zone:
                return zone
        return self.default_availability_zone

    @property
    def free_vcpus(self) -> float:
        """VCPUs still allocatable, overcommit included."""
        return self.vcpus_total * self.cpu_allocation_ratio - self.vcpus_used

    @property
    def free_ram_mb(self) -> float:
        """Memory still allocatable, overcommit and reservation included."""
        return (self.ram_total_mb - self.ram_reserved_mb) * self.ram_allocation_ratio - (
            self.ram_used_mb
        )

    @property
    def free_disk_gb(self) -> float:
        """Disk still allocatable, overcommit included."""
        return self.disk_total_gb * self.disk_allocation_ratio - self.disk_used_gb

    @property
    def num_instances(self) -> int:
        """How many servers the host runs or has been given."""
        return len(self.instances)

    def aggregate_metadata(self) -> dict[str, set[str]]:
        """Every metadata key of the host's aggregates, with all values seen.

        A value may list several, comma-separated, as Nova reads them.
        """
        merged: dict[str, set[str]] = {}
        for aggregate in self.aggregates:
            for key, value in aggregate.metadata.items():
                merged.setdefault(key, set()).update(part.strip() for part in str(value).split(","))
        return merged

    def fits(self, flavor: FlavorInfo) -> bool:
        """Whether the flavor still fits in what the host has left."""
        return self.fits_sizes(flavor.vcpus, flavor.ram_mb, flavor.disk_gb)

    def fits_sizes(self, vcpus: int, ram_mb: int, disk_gb: int) -> bool:
        """Whether that many VCPUs, MiB and GiB still fit (the scheduler's inner loop)."""
        return (
            vcpus <= self.vcpus_total * self.cpu_allocation_ratio - self.vcpus_used
            and ram_mb
            <= (self.ram_total_mb - self.ram_reserved_mb) * self.ram_allocation_ratio
            - self.ram_used_mb
            and disk_gb <= self.disk_total_gb * self.disk_allocation_ratio - self.disk_used_gb
        )

    def consume(self, spec: RequestSpec, instance_uuid: str) -> None:
        """Account for one instance of ``spec`` placed here (later choices see it)."""
        self.vcpus_used += spec.flavor.vcpus
        self.ram_used_mb += spec.flavor.ram_mb
        self.disk_used_gb += spec.flavor.disk_gb
        self.num_io_ops += 1
        group_uuid = spec.group.uuid if spec.group else None
        self.instances[instance_uuid] = group_uuid
        if spec.group:
            spec.group.members.add(instance_uuid)
            spec.group.hosts.add(self.host)


@dataclass
class FlavorInfo:
    """The part of a flavor scheduling needs."""

    vcpus: int = 1
    ram_mb: int = 512
    root_gb: int = 1
    ephemeral_gb: int = 0
    swap_mb: int = 0
    extra_specs: dict[str, str] = field(default_factory=dict)

    @property
    def disk_gb(self) -> int:
        """Root, ephemeral and swap disk together, in whole GiB."""
        return self.root_gb + self.ephemeral_gb + math.ceil(self.swap_mb / 1024)


@dataclass
class ServerGroupInfo:
    """The server group of the request: policy, rules, members and their hosts."""

    uuid: str
    policy: str
    members: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    max_server_per_host: int | None = None


@dataclass
class RequestSpec:
    """One boot (or move) request: what must be placed, and the constraints on where."""

    flavor: FlavorInfo = field(default_factory=FlavorInfo)
    image_properties: dict[str, Any] = field(default_factory=dict)
    project_id: str = ""
    user_id: str = ""
    availability_zone: str | None = None
    # Admin's ``zone:host[:node]``: only these hosts, filters bypassed (as Nova does).
    force_hosts: list[str] = field(default_factory=list)
    force_nodes: list[str] = field(default_factory=list)
    # ``host``/``hypervisor_hostname`` on create (2.74): only these, filters still apply.
    requested_host: str | None = None
    requested_node: str | None = None
    same_host: list[str] = field(default_factory=list)
    different_host: list[str] = field(default_factory=list)
    group: ServerGroupInfo | None = None
    num_instances: int = 1
    instance_uuids: list[str] = field(default_factory=list)
    # Hosts already tried (reschedules) or excluded (moves: the source host).
    ignore_hosts: set[str] = field(default_factory=set)
