"""Host aggregates as the rest of compute reads them: their hosts, metadata and zones,
the one-zone-per-host rule, and their mirror as placement aggregates."""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.compute.models import ComputeNode
from onestack.compute.models_admin import Aggregate, AggregateHost, AggregateMetadata
from onestack.compute.scheduler.state import AggregateInfo
from onestack.core.client import ServiceClient

log = logging.getLogger(__name__)

ZONE_KEY = "availability_zone"
PLACEMENT_VERSION = {"OpenStack-API-Version": "placement 1.19"}


async def hosts_of(session: AsyncSession, aggregate_id: int) -> list[str]:
    """The hosts of one aggregate, sorted."""
    query = select(AggregateHost.host).where(AggregateHost.aggregate_id == aggregate_id)
    return sorted((await session.execute(query)).scalars())


async def metadata_of(session: AsyncSession, aggregate_id: int) -> dict[str, str]:
    """The metadata of one aggregate."""
    query = select(AggregateMetadata).where(AggregateMetadata.aggregate_id == aggregate_id)
    return {row.key: row.value for row in (await session.execute(query)).scalars()}


async def aggregates_by_host(session: AsyncSession) -> dict[str, list[AggregateInfo]]:
    """Every host that is in an aggregate, with its aggregates and their metadata."""
    aggregates = {row.id: row for row in (await session.execute(select(Aggregate))).scalars()}
    metadata: dict[int, dict[str, str]] = defaultdict(dict)
    for row in (await session.execute(select(AggregateMetadata))).scalars():
        metadata[row.aggregate_id][row.key] = row.value
    found: dict[str, list[AggregateInfo]] = defaultdict(list)
    for member in (await session.execute(select(AggregateHost))).scalars():
        aggregate = aggregates[member.aggregate_id]
        found[member.host].append(
            AggregateInfo(aggregate.name, aggregate.uuid, dict(metadata[aggregate.id]))
        )
    return dict(found)


async def zones_of_hosts(session: AsyncSession, default_zone: str) -> dict[str, str]:
    """The zone of every host in an aggregate with a zone (others are in ``default_zone``)."""
    zones: dict[str, str] = {}
    for host, aggregates in (await aggregates_by_host(session)).items():
        for aggregate in aggregates:
            if aggregate.availability_zone:
                zones[host] = aggregate.availability_zone
                break
        else:
            zones[host] = default_zone
    return zones


async def zone_member_of(session: AsyncSession, zone: str | None, default_zone: str) -> list[str]:
    """Placement ``member_of=in:`` for a request naming ``zone``: the uuids of the
    aggregates that make it (so a limited candidate list holds only hosts of the zone).

    Empty for no zone and for the default zone (its hosts are those in no zoned
    aggregate, which ``member_of`` cannot say); the zone filter still applies after.
    """
    if not zone or zone == default_zone:
        return []
    query = (
        select(Aggregate.uuid)
        .join(AggregateMetadata, AggregateMetadata.aggregate_id == Aggregate.id)
        .where(AggregateMetadata.key == ZONE_KEY, AggregateMetadata.value == zone)
        .order_by(Aggregate.uuid)
    )
    return list((await session.execute(query)).scalars())


async def conflicting_zones(
    session: AsyncSession, hosts: list[str], zone: str, aggregate_id: int
) -> set[str]:
    """The zones other than ``zone`` that ``hosts`` are in through other aggregates."""
    if not hosts:
        return set()
    query = (
        select(AggregateMetadata.value)
        .join(AggregateHost, AggregateHost.aggregate_id == AggregateMetadata.aggregate_id)
        .where(
            AggregateHost.host.in_(hosts),
            AggregateMetadata.key == ZONE_KEY,
            AggregateMetadata.aggregate_id != aggregate_id,
            AggregateMetadata.value != zone,
        )
    )
    return set((await session.execute(query)).scalars())


async def mirror_to_placement(
    client: ServiceClient, session: AsyncSession, host: str, aggregate_uuid: str, *, add: bool
) -> None:
    """Add (or remove) the aggregate on the placement providers of ``host``'s nodes.

    Placement failures are logged, not raised: the compute aggregate stays the truth and
    the next membership change re-mirrors it.
    """
    query = select(ComputeNode.uuid).where(ComputeNode.host == host)
    for node_uuid in (await session.execute(query)).scalars():
        path = f"/resource_providers/{node_uuid}/aggregates"
        try:
            current = await client.request("placement", "GET", path, headers=PLACEMENT_VERSION)
            if current.status_code != 200:
                log.warning(
                    "placement has no provider %s for host %s: %s %s",
                    node_uuid,
                    host,
                    current.status_code,
                    current.text[:200],
                )
                continue
            body = current.json()
            members = set(body.get("aggregates", []))
            members = members | {aggregate_uuid} if add else members - {aggregate_uuid}
            answer = await client.request(
                "placement",
                "PUT",
                path,
                headers=PLACEMENT_VERSION,
                json={
                    "aggregates": sorted(members),
                    "resource_provider_generation": body["resource_provider_generation"],
                },
            )
            if answer.status_code != 200:
                log.warning(
                    "placement refused aggregates of %s: %s %s",
                    node_uuid,
                    answer.status_code,
                    answer.text[:200],
                )
        except Exception:
            log.exception("mirroring aggregate %s of host %s into placement", aggregate_uuid, host)
