"""``/os-aggregates``: host aggregates, their metadata and hosts (``openstack aggregate``).

A host is in at most one availability zone: adding it to a zoned aggregate, or zoning an
aggregate, while one of its hosts is in another zone is refused. Memberships are mirrored
as placement aggregates on the hosts' resource providers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute import host_aggregates
from onestack.compute.api.common import at_least, body_of, enforce, own, service
from onestack.compute.host_aggregates import ZONE_KEY
from onestack.compute.models import ComputeNode
from onestack.compute.models_admin import Aggregate, AggregateHost, AggregateMetadata
from onestack.core.asgi.errors import BadRequest, Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()
COMPUTE_BINARY = "nova-compute"


def _text(value: Any, name: str, *, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255 or value != value.strip():
        raise BadRequest(
            f"Invalid input for field/attribute {name}. Value: {value}. "
            "A string of 1 to 255 characters without surrounding spaces is expected."
        )
    return value


def _time(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value is not None else None


async def _view(request: Request, session: AsyncSession, aggregate: Aggregate) -> dict[str, Any]:
    metadata = await host_aggregates.metadata_of(session, aggregate.id)
    view: dict[str, Any] = {
        "id": aggregate.id,
        "name": aggregate.name,
        "availability_zone": metadata.get(ZONE_KEY),
        "hosts": await host_aggregates.hosts_of(session, aggregate.id),
        "metadata": metadata,
        "created_at": _time(aggregate.created_at),
        "updated_at": _time(aggregate.updated_at),
        "deleted": False,
        "deleted_at": None,
    }
    if at_least(request, "2.41"):
        view["uuid"] = aggregate.uuid
    return view


async def _load(session: AsyncSession, aggregate_id: str) -> Aggregate:
    found = None
    if aggregate_id.isdigit():
        found = await session.get(Aggregate, int(aggregate_id))
    if found is None:
        raise NotFound(f"Aggregate {aggregate_id} could not be found.")
    return found


async def _check_zone(
    session: AsyncSession, aggregate: Aggregate, zone: str | None, *, status: type
) -> None:
    """Refuse a zone for ``aggregate`` that one of its hosts' other aggregates contradicts."""
    if not zone:
        return
    hosts = await host_aggregates.hosts_of(session, aggregate.id)
    others = await host_aggregates.conflicting_zones(session, hosts, zone, aggregate.id)
    if others:
        raise status(
            f"Cannot update aggregate {aggregate.id}. Reason: One or more hosts already in "
            f"availability zone(s) {sorted(others)}."
        )


async def _set_metadata(
    session: AsyncSession, aggregate: Aggregate, changes: dict[str, str | None]
) -> None:
    for key, value in changes.items():
        await session.execute(
            delete(AggregateMetadata).where(
                AggregateMetadata.aggregate_id == aggregate.id, AggregateMetadata.key == key
            )
        )
        if value is not None:
            session.add(AggregateMetadata(aggregate_id=aggregate.id, key=key, value=value))
    await session.flush()


@routes.get("/v2.1/os-aggregates")
async def list_aggregates(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    async with service(request).db.session() as session:
        rows = (await session.execute(select(Aggregate).order_by(Aggregate.id))).scalars()
        views = [await _view(request, session, row) for row in rows]
    return JSONResponse({"aggregates": views})


@routes.post("/v2.1/os-aggregates")
async def create_aggregate(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    body = body_of(await json_body(request), "aggregate")
    name = _text(body.get("name"), "name")
    zone = _text(body.get("availability_zone"), "availability_zone", nullable=True)
    unknown = set(body) - {"name", "availability_zone"}
    if unknown:
        raise BadRequest(f"Additional properties are not allowed ({', '.join(sorted(unknown))}).")
    try:
        async with service(request).db.session() as session:
            aggregate = Aggregate(name=name)
            session.add(aggregate)
            await session.flush()
            if zone:
                await _set_metadata(session, aggregate, {ZONE_KEY: zone})
            view = await _view(request, session, aggregate)
    except IntegrityError:
        raise Conflict(f"Aggregate {name} already exists.") from None
    view.pop("hosts")
    view.pop("metadata")
    return JSONResponse({"aggregate": view})


@routes.get("/v2.1/os-aggregates/{aggregate_id}")
async def show_aggregate(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    async with service(request).db.session() as session:
        aggregate = await _load(session, request.path_params["aggregate_id"])
        return JSONResponse({"aggregate": await _view(request, session, aggregate)})


@routes.put("/v2.1/os-aggregates/{aggregate_id}")
async def update_aggregate(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    body = body_of(await json_body(request), "aggregate")
    unknown = set(body) - {"name", "availability_zone"}
    if unknown or not body:
        raise BadRequest("Only 'name' and 'availability_zone' can be updated.")
    try:
        async with service(request).db.session() as session:
            aggregate = await _load(session, request.path_params["aggregate_id"])
            if "name" in body:
                aggregate.name = _text(body["name"], "name") or aggregate.name
            if "availability_zone" in body:
                zone = _text(body["availability_zone"], "availability_zone", nullable=True)
                await _check_zone(session, aggregate, zone, status=BadRequest)
                await _set_metadata(session, aggregate, {ZONE_KEY: zone})
            await session.flush()
            view = await _view(request, session, aggregate)
    except IntegrityError:
        raise Conflict(f"Aggregate {body.get('name')} already exists.") from None
    return JSONResponse({"aggregate": view})


@routes.delete("/v2.1/os-aggregates/{aggregate_id}")
async def delete_aggregate(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    async with service(request).db.session() as session:
        aggregate = await _load(session, request.path_params["aggregate_id"])
        if await host_aggregates.hosts_of(session, aggregate.id):
            raise BadRequest(
                f"Cannot perform action 'delete' on aggregate {aggregate.id}. "
                "Reason: Host aggregate is not empty."
            )
        await session.delete(aggregate)
    return Response(status_code=200)


async def _host_exists(request: Request, session: AsyncSession, host: str) -> bool:
    query = select(ComputeNode.id).where(
        or_(ComputeNode.host == host, ComputeNode.hypervisor_hostname == host)
    )
    if (await session.execute(query.limit(1))).first() is not None:
        return True
    return bool(await service(request).services.list(binary=COMPUTE_BINARY, host=host))


@routes.post("/v2.1/os-aggregates/{aggregate_id}/action")
async def aggregate_action(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise BadRequest("Exactly one of add_host, remove_host, set_metadata is expected.")
    action, args = next(iter(data.items()))
    if action not in ("add_host", "remove_host", "set_metadata") or not isinstance(args, dict):
        raise BadRequest(f"Invalid aggregate action {action!r}.")
    compute = service(request)
    host: str | None = None
    async with compute.db.session() as session:
        aggregate = await _load(session, request.path_params["aggregate_id"])
        if action == "set_metadata":
            metadata = args.get("metadata")
            if not isinstance(metadata, dict) or set(args) != {"metadata"}:
                raise BadRequest("set_metadata takes {'metadata': {key: value or null}}.")
            changes: dict[str, str | None] = {}
            for key, value in metadata.items():
                _text(key, "metadata key")
                if value is not None and not isinstance(value, str):
                    value = str(value)
                changes[key] = _text(value, f"metadata {key}", nullable=True)
            if ZONE_KEY in changes:
                await _check_zone(session, aggregate, changes[ZONE_KEY], status=BadRequest)
            await _set_metadata(session, aggregate, changes)
        else:
            host = args.get("host")
            if not isinstance(host, str) or not host or set(args) != {"host"}:
                raise BadRequest(f"{action} takes {{'host': <host name>}}.")
            members = await host_aggregates.hosts_of(session, aggregate.id)
            if action == "add_host":
                if not await _host_exists(request, session, host):
                    raise NotFound(f"Compute host {host} could not be found.")
                if host in members:
                    raise Conflict(f"Aggregate {aggregate.id} already has host {host}.")
                zone = (await host_aggregates.metadata_of(session, aggregate.id)).get(ZONE_KEY)
                others = await host_aggregates.conflicting_zones(
                    session, [host], zone or "", aggregate.id
                )
                if zone and others:
                    raise Conflict(
                        f"Cannot add host to aggregate {aggregate.id}. Reason: One or more "
                        f"hosts already in availability zone(s) {sorted(others)}."
                    )
                session.add(AggregateHost(aggregate_id=aggregate.id, host=host))
            else:
                if host not in members:
                    raise NotFound(f"Cannot remove host {host} in aggregate {aggregate.id}")
                await session.execute(
                    delete(AggregateHost).where(
                        AggregateHost.aggregate_id == aggregate.id, AggregateHost.host == host
                    )
                )
            await session.flush()
        view = await _view(request, session, aggregate)
    if host is not None:
        async with compute.db.session() as session:
            await host_aggregates.mirror_to_placement(
                compute.client, session, host, aggregate.uuid, add=action == "add_host"
            )
    return JSONResponse({"aggregate": view})
