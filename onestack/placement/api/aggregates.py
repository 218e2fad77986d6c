"""``/resource_providers/{uuid}/aggregates`` (1.1 on; generations from 1.19)."""

from __future__ import annotations

from typing import Any

from pydantic import RootModel
from sqlalchemy import delete, insert, select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import (
    CONCURRENT_UPDATE,
    GENERATION_CHANGED,
    Body,
    UUIDStr,
    at_least,
    body_as,
    bump_generation,
    conflict,
    enforce,
    find_provider,
    json_response,
    path_provider,
    require_version,
    service,
)
from onestack.placement.models import ProviderAggregate

routes = RouteTable()


class AggregateList(RootModel[list[UUIDStr]]):
    """1.1 to 1.18: a bare list of aggregate uuids."""


class ProviderAggregates(Body):
    aggregates: list[UUIDStr]
    resource_provider_generation: int


def _body(request: Request, aggregates: list[str], generation: int) -> dict[str, Any]:
    body: dict[str, Any] = {"aggregates": aggregates}
    if at_least(request, 19):
        body["resource_provider_generation"] = generation
    return body


@routes.get("/resource_providers/{uuid}/aggregates")
async def list_aggregates(request: Request) -> Response:
    require_version(request, 1)
    enforce(request, "resource_providers:aggregates:list")
    async with service(request).db.session() as session:
        provider = await find_provider(session, request.path_params["uuid"])
        aggregates = list(
            await session.scalars(
                select(ProviderAggregate.aggregate_uuid)
                .where(ProviderAggregate.resource_provider_id == provider.id)
                .order_by(ProviderAggregate.aggregate_uuid)
            )
        )
    return json_response(
        request, _body(request, aggregates, provider.generation), last_modified=provider.updated_at
    )


@routes.put("/resource_providers/{uuid}/aggregates")
async def put_aggregates(request: Request) -> Response:
    require_version(request, 1)
    enforce(request, "resource_providers:aggregates:update")
    provider = await path_provider(request)
    expected: int | None = None
    if at_least(request, 19):
        body = await body_as(request, ProviderAggregates)
        aggregates, expected = body.aggregates, body.resource_provider_generation
        if expected != provider.generation:
            raise conflict(GENERATION_CHANGED, code=CONCURRENT_UPDATE)
    else:
        aggregates = (await body_as(request, AggregateList)).root
    if len(set(aggregates)) != len(aggregates):
        raise BadRequest(f"JSON does not validate: {aggregates} has non-unique elements")
    async with service(request).db.session() as session:
        generation = provider.generation
        if expected is not None:
            generation = await bump_generation(session, provider.id, expected, GENERATION_CHANGED)
        await session.execute(
            delete(ProviderAggregate).where(ProviderAggregate.resource_provider_id == provider.id)
        )
        if aggregates:
            await session.execute(
                insert(ProviderAggregate),
                [{"resource_provider_id": provider.id, "aggregate_uuid": a} for a in aggregates],
            )
    return json_response(request, _body(request, aggregates, generation))
