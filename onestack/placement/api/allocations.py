"""``/allocations``: what consumers hold, per consumer, per provider, and several at once."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Annotated, Any

from pydantic import ConfigDict, Field, RootModel, StringConstraints
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import (
    Body,
    UUIDStr,
    at_least,
    body_as,
    canonical_uuid,
    enforce,
    find_provider,
    json_response,
    no_content,
    require_version,
    service,
)
from onestack.placement.claims import UNCHECKED, ConsumerClaim, replace_allocations
from onestack.placement.models import Allocation, Consumer, ResourceProvider

routes = RouteTable()

# Consumers written before 1.8 carry no project or user; upstream records these.
INCOMPLETE_CONSUMER = "00000000-0000-0000-0000-000000000000"

ClassName = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9_]+$")]
Amounts = Annotated[dict[ClassName, Annotated[int, Field(ge=1)]], Field(min_length=1)]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ConsumerType = Annotated[
    str, StringConstraints(pattern=r"^[A-Z0-9_]+$", min_length=1, max_length=255)
]
Mappings = Annotated[
    dict[
        Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{0,64}$")],
        Annotated[list[UUIDStr], Field(min_length=1)],
    ],
    Field(min_length=1),
]


class ProviderRef(Body):
    uuid: UUIDStr


class ListedAllocation(Body):
    resource_provider: ProviderRef
    resources: Amounts


class ProviderAmounts(Body):
    resources: Amounts
    generation: int | None = None  # ignored, as the API reference says


class ListAllocations(Body):
    """1.0 to 1.11: a list of provider allocations."""

    allocations: Annotated[list[ListedAllocation], Field(min_length=1)]
    project_id: ExternalId | None = None
    user_id: ExternalId | None = None


class DictAllocations(Body):
    """1.12 on: allocations keyed by provider uuid."""

    allocations: dict[UUIDStr, ProviderAmounts]
    project_id: ExternalId
    user_id: ExternalId
    consumer_generation: int | None = None
    mappings: Mappings | None = None
    consumer_type: ConsumerType | None = None


def _consumer_uuid(request: Request) -> str:
    raw = request.path_params["consumer_uuid"]
    try:
        return canonical_uuid(raw)
    except ValueError:
        raise BadRequest(f"Malformed consumer_uuid: {raw}") from None


def _check_fields(request: Request, data: dict[str, Any], *, emptiable: bool) -> None:
    """The parts of the body each microversion requires or forbids."""
    fields = set(data)
    if "consumer_generation" in fields and not at_least(request, 28):
        raise BadRequest("JSON does not validate: Additional properties are not allowed.")
    if not at_least(request, 28) and not emptiable and not data.get("allocations"):
        raise BadRequest("JSON does not validate: allocations should be non-empty.")
    if at_least(request, 28) and "consumer_generation" not in fields:
        raise BadRequest("JSON does not validate: 'consumer_generation' is a required property")
    if "mappings" in fields and not at_least(request, 34):
        raise BadRequest("JSON does not validate: Additional properties are not allowed.")
    if at_least(request, 38):
        if "consumer_type" not in fields:
            raise BadRequest("JSON does not validate: 'consumer_type' is a required property")
    elif "consumer_type" in fields:
        raise BadRequest("JSON does not validate: Additional properties are not allowed.")


def _claim(consumer_uuid: str, request: Request, body: DictAllocations) -> ConsumerClaim:
    return ConsumerClaim(
        consumer_uuid=consumer_uuid,
        project_id=body.project_id,
        user_id=body.user_id,
        allocations={rp: dict(entry.resources) for rp, entry in body.allocations.items()},
        generation=body.consumer_generation if at_least(request, 28) else UNCHECKED,
        consumer_type=body.consumer_type,
    )


async def _find_consumer(session: AsyncSession, request: Request) -> tuple[str, Consumer | None]:
    """The consumer of the path (its uuid in canonical form when it is one), if it exists."""
    consumer_uuid = request.path_params["consumer_uuid"]
    with contextlib.suppress(ValueError):
        consumer_uuid = canonical_uuid(consumer_uuid)
    consumer = await session.scalar(select(Consumer).where(Consumer.uuid == consumer_uuid))
    return consumer_uuid, consumer


@routes.get("/allocations/{consumer_uuid}")
async def show_allocations(request: Request) -> Response:
    enforce(request, "allocations:list")
    placement = service(request)
    async with placement.db.session() as session:
        _, consumer = await _find_consumer(session, request)
        rows: list[Any] = []
        if consumer is not None:
            found = (
                await session.execute(
                    select(
                        ResourceProvider.uuid,
                        ResourceProvider.generation,
                        Allocation.resource_class_id,
                        Allocation.used,
                        Allocation.updated_at,
                    )
                    .join(ResourceProvider, ResourceProvider.id == Allocation.resource_provider_id)
                    .where(Allocation.consumer_id == consumer.id)
                )
            ).all()
            rows = list(found)
    names = await placement.resource_classes.names_of(row[2] for row in rows)
    allocations: dict[str, dict[str, Any]] = {}
    for provider_uuid, generation, cls, used, _ in rows:
        entry = allocations.setdefault(provider_uuid, {"generation": generation, "resources": {}})
        entry["resources"][names[cls]] = used
    body: dict[str, Any] = {"allocations": allocations}
    if rows and consumer is not None and at_least(request, 12):
        body["project_id"] = consumer.project_id
        body["user_id"] = consumer.user_id
        if at_least(request, 28):
            body["consumer_generation"] = consumer.generation
        if at_least(request, 38):
            body["consumer_type"] = consumer.consumer_type or "unknown"
    latest = max((row[4] for row in rows), default=None)
    return json_response(request, body, last_modified=latest)


@routes.put("/allocations/{consumer_uuid}")
async def put_allocations(request: Request) -> Response:
    enforce(request, "allocations:update")
    consumer_uuid = _consumer_uuid(request)
    if at_least(request, 12):
        body = await body_as(request, DictAllocations)
        _check_fields(request, body.model_dump(exclude_unset=True), emptiable=False)
        claim = _claim(consumer_uuid, request, body)
    else:
        listed = await body_as(request, ListAllocations)
        if at_least(request, 8) and (listed.project_id is None or listed.user_id is None):
            raise BadRequest("JSON does not validate: 'project_id' is a required property")
        if not at_least(request, 8) and (listed.project_id or listed.user_id):
            raise BadRequest("JSON does not validate: Additional properties are not allowed.")
        claim = ConsumerClaim(
            consumer_uuid=consumer_uuid,
            project_id=listed.project_id or INCOMPLETE_CONSUMER,
            user_id=listed.user_id or INCOMPLETE_CONSUMER,
            allocations={a.resource_provider.uuid: dict(a.resources) for a in listed.allocations},
        )
    placement = service(request)
    await replace_allocations(placement.db, placement.resource_classes, [claim])
    return no_content()


class ManyAllocations(RootModel[dict[UUIDStr, DictAllocations]]):
    """``POST /allocations``: consumer uuid → its allocations."""

    model_config = ConfigDict(strict=True)


@routes.post("/allocations")
async def post_allocations(request: Request) -> Response:
    require_version(request, 13, status=405)
    enforce(request, "allocations:manage")
    wrapped = await body_as(request, ManyAllocations)
    claims = []
    for consumer_uuid, body in wrapped.root.items():
        _check_fields(request, body.model_dump(exclude_unset=True), emptiable=True)
        claims.append(_claim(consumer_uuid, request, body))
    if not claims:
        raise BadRequest("JSON does not validate: {} does not have enough properties")
    placement = service(request)
    await replace_allocations(placement.db, placement.resource_classes, claims)
    return no_content()


@routes.delete("/allocations/{consumer_uuid}")
async def delete_allocations(request: Request) -> Response:
    enforce(request, "allocations:delete")
    placement = service(request)
    async with placement.db.session() as session:
        consumer_uuid, consumer = await _find_consumer(session, request)
    if consumer is None:
        raise NotFound(f"No allocations for consumer '{consumer_uuid}'")
    release = ConsumerClaim(consumer_uuid, consumer.project_id, consumer.user_id, {})
    await replace_allocations(placement.db, placement.resource_classes, [release])
    return no_content()


@routes.get("/resource_providers/{uuid}/allocations")
async def provider_allocations(request: Request) -> Response:
    enforce(request, "resource_providers:allocations:list")
    placement = service(request)
    async with placement.db.session() as session:
        provider = await find_provider(session, request.path_params["uuid"])
        rows = (
            await session.execute(
                select(
                    Consumer.uuid,
                    Consumer.generation,
                    Allocation.resource_class_id,
                    Allocation.used,
                    Allocation.updated_at,
                )
                .join(Consumer, Consumer.id == Allocation.consumer_id)
                .where(Allocation.resource_provider_id == provider.id)
            )
        ).all()
    names = await placement.resource_classes.names_of(row[2] for row in rows)
    allocations: dict[str, dict[str, Any]] = defaultdict(lambda: {"resources": {}})
    for consumer_uuid, generation, cls, used, _ in rows:
        entry = allocations[consumer_uuid]
        entry["resources"][names[cls]] = used
        if at_least(request, 28):
            entry["consumer_generation"] = generation
    latest = max((row[4] for row in rows), default=None)
    return json_response(
        request,
        {"allocations": dict(allocations), "resource_provider_generation": provider.generation},
        last_modified=latest,
    )
