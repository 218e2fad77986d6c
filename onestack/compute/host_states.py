"""Host states for the scheduler: placement's allocation candidates joined with what the
compute database knows of those hosts (node, service, aggregates, servers, groups)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, or_, select

from onestack.compute import vm_states
from onestack.compute.models import SERVICE_TABLES, ComputeNode, Instance
from onestack.compute.models_admin import (
    Aggregate,
    AggregateHost,
    AggregateMetadata,
    ServerGroup,
    ServerGroupMember,
)
from onestack.compute.placement_client import Candidate
from onestack.compute.scheduler.state import (
    AggregateInfo,
    FlavorInfo,
    HostState,
    RequestSpec,
    ServerGroupInfo,
)
from onestack.core.config import ComputeSettings
from onestack.core.db import Database, utcnow

COMPUTE_BINARY = "nova-compute"
# Work that keeps a host's disks and network busy (Nova's "io ops"): builds and these tasks.
IO_TASKS = (
    vm_states.SPAWNING,
    vm_states.RESIZE_PREP,
    vm_states.RESIZE_MIGRATING,
    vm_states.MIGRATING,
    "rebuilding",
    "image_snapshot",
    "unshelving",
    "rescuing",
)


def flavor_info(flavor: dict[str, Any]) -> FlavorInfo:
    """The scheduler's view of an embedded flavor."""
    return FlavorInfo(
        vcpus=int(flavor["vcpus"]),
        ram_mb=int(flavor["ram"]),
        root_gb=int(flavor["disk"]),
        ephemeral_gb=int(flavor.get("ephemeral", 0)),
        swap_mb=int(flavor.get("swap") or 0),
        extra_specs=dict(flavor.get("extra_specs", {})),
    )


async def server_group_of(db: Database, instance_uuid: str) -> ServerGroupInfo | None:
    """The group of a server with its members and their hosts, or None."""
    async with db.session() as session:
        group = (
            await session.execute(
                select(ServerGroup)
                .join(ServerGroupMember, ServerGroupMember.group_id == ServerGroup.id)
                .where(ServerGroupMember.instance_uuid == instance_uuid)
            )
        ).scalar_one_or_none()
        if group is None:
            return None
        rows = (
            await session.execute(
                select(ServerGroupMember.instance_uuid, Instance.host)
                .join(Instance, Instance.uuid == ServerGroupMember.instance_uuid)
                .where(ServerGroupMember.group_id == group.id, Instance.deleted.is_(False))
            )
        ).all()
    rules = group.rules or {}
    limit = rules.get("max_server_per_host")
    return ServerGroupInfo(
        uuid=group.uuid,
        policy=group.policy,
        members={uuid for uuid, _ in rows},
        hosts={host for _, host in rows if host},
        max_server_per_host=int(limit) if limit else None,
    )


async def build_host_states(
    db: Database,
    config: ComputeSettings,
    candidates: list[Candidate],
    spec: RequestSpec,
    failed_builds: dict[str, int],
) -> list[HostState]:
    """One ``HostState`` per candidate provider that is a known compute node."""
    uuids = [c.provider_uuid for c in candidates]
    if not uuids:
        return []
    by_uuid = {c.provider_uuid: c for c in candidates}
    services = SERVICE_TABLES.records
    async with db.session() as session:
        nodes = (
            (await session.execute(select(ComputeNode).where(ComputeNode.uuid.in_(uuids))))
            .scalars()
            .all()
        )
        hosts = sorted({n.host for n in nodes})
        service_rows = (
            await session.execute(
                select(services).where(
                    services.c.host.in_(hosts), services.c.binary == COMPUTE_BINARY
                )
            )
        ).all()
        io_ops = dict(
            (
                await session.execute(
                    select(Instance.host, func.count(Instance.id))
                    .where(
                        Instance.host.in_(hosts),
                        Instance.deleted.is_(False),
                        or_(
                            Instance.vm_state == vm_states.BUILDING,
                            Instance.task_state.in_(IO_TASKS),
                        ),
                    )
                    .group_by(Instance.host)
                )
            )
            .tuples()
            .all()
        )
        aggregate_rows = (
            await session.execute(
                select(AggregateHost.host, Aggregate.id, Aggregate.uuid, Aggregate.name)
                .join(Aggregate, Aggregate.id == AggregateHost.aggregate_id)
                .where(AggregateHost.host.in_(hosts))
            )
        ).all()
        metadata: dict[int, dict[str, str]] = defaultdict(dict)
        aggregate_ids = {row.id for row in aggregate_rows}
        if aggregate_ids:
            for item in (
                await session.execute(
                    select(AggregateMetadata).where(
                        AggregateMetadata.aggregate_id.in_(aggregate_ids)
                    )
                )
            ).scalars():
                metadata[item.aggregate_id][item.key] = item.value
        instances: dict[str, dict[str, str | None]] = defaultdict(dict)
        if spec.group or spec.same_host or spec.different_host:
            members = select(ServerGroupMember.instance_uuid, ServerGroup.uuid).join(
                ServerGroup, ServerGroup.id == ServerGroupMember.group_id
            )
            groups = {uuid: group for uuid, group in (await session.execute(members)).all()}
            for uuid, on_host in (
                await session.execute(
                    select(Instance.uuid, Instance.host).where(
                        Instance.host.in_(hosts), Instance.deleted.is_(False)
                    )
                )
            ).all():
                instances[on_host or ""][uuid] = groups.get(uuid)
    down_after = config.report_interval * 3
    now = utcnow()
    service_of = {row.host: row for row in service_rows}
    aggregates_of: dict[str, list[AggregateInfo]] = defaultdict(list)
    for row in aggregate_rows:
        aggregates_of[row.host].append(AggregateInfo(row.name, row.uuid, metadata[row.id]))
    states = []
    for node in nodes:
        candidate = by_uuid[node.uuid]
        service = service_of.get(node.host)
        up = bool(
            service is not None
            and not service.forced_down
            and service.last_seen_at is not None
            and (now - service.last_seen_at).total_seconds() <= down_after
        )
        states.append(
            HostState(
                host=node.host,
                node=node.hypervisor_hostname,
                uuid=node.uuid,
                vcpus_total=node.vcpus,
                vcpus_used=candidate.used.get("VCPU", 0),
                ram_total_mb=node.memory_mb,
                ram_used_mb=candidate.used.get("MEMORY_MB", 0),
                disk_total_gb=node.local_gb,
                disk_used_gb=candidate.used.get("DISK_GB", 0),
                cpu_allocation_ratio=config.cpu_allocation_ratio,
                ram_allocation_ratio=config.ram_allocation_ratio,
                disk_allocation_ratio=config.disk_allocation_ratio,
                aggregates=aggregates_of[node.host],
                default_availability_zone=config.default_availability_zone,
                service_disabled=bool(service is not None and service.disabled),
                service_up=up,
                instances=instances[node.host],
                failed_builds=failed_builds.get(node.host, 0),
                num_io_ops=io_ops.get(node.host, 0),
                traits=set(node.traits or []),
                hypervisor_type=node.hypervisor_type,
                hypervisor_version=node.hypervisor_version,
                cpu_info=node.cpu_info or {},
                supported_instances=[("x86_64", node.hypervisor_type, "hvm")],
            )
        )
    return states
