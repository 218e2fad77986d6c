"""``/resource_providers/{uuid}/inventories[/{resource_class}]``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import affected
from onestack.placement.api.common import (
    CONCURRENT_UPDATE,
    INVENTORY_INUSE,
    Body,
    at_least,
    body_as,
    bump_generation,
    conflict,
    enforce,
    find_provider,
    json_response,
    location,
    no_content,
    path_provider,
    require_version,
    service,
)
from onestack.placement.models import MAX_INT, Inventory, ResourceProvider
from onestack.placement.views import inventory_view

routes = RouteTable()

Count = Annotated[int, Field(ge=1, le=MAX_INT)]
ClassName = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9_]+$")]
# Upstream's column is a single-precision float.
RATIO_MAX = 3.40282e38


class InventoryFields(Body):
    total: Count
    reserved: Annotated[int, Field(ge=0, le=MAX_INT)] = 0
    min_unit: Count = 1
    max_unit: Count = MAX_INT
    step_size: Count = 1
    allocation_ratio: Annotated[float, Field(le=RATIO_MAX)] = 1.0


class OneInventory(InventoryFields):
    resource_provider_generation: int


class NewInventory(InventoryFields):
    resource_class: ClassName


class AllInventories(Body):
    resource_provider_generation: int
    inventories: dict[ClassName, InventoryFields]


def _check_capacity(
    request: Request, provider_uuid: str, name: str, fields: InventoryFields
) -> None:
    capacity = int((fields.total - fields.reserved) * fields.allocation_ratio)
    if at_least(request, 26):
        if capacity < 0:
            raise BadRequest(
                f"Unable to update inventory for resource provider {provider_uuid}: Invalid "
                f"inventory for '{name}' on resource provider '{provider_uuid}'. The reserved "
                "value is greater than total."
            )
    elif capacity <= 0:
        raise BadRequest(
            f"Unable to update inventory for resource provider {provider_uuid}: Invalid "
            f"inventory for '{name}' on resource provider '{provider_uuid}'. The reserved value "
            "is greater than or equal to total."
        )


async def _current(session: AsyncSession, provider_id: int) -> dict[int, Inventory]:
    rows = await session.scalars(
        select(Inventory).where(Inventory.resource_provider_id == provider_id)
    )
    return {row.resource_class_id: row for row in rows}


async def _remove(
    session: AsyncSession,
    provider: ResourceProvider,
    class_ids: dict[int, str],
    message: str,
) -> None:
    """Delete these inventories, all or none: 409 when any has allocations against it."""
    if not class_ids:
        return
    done = await session.execute(
        delete(Inventory)
        .where(
            Inventory.resource_provider_id == provider.id,
            Inventory.resource_class_id.in_(sorted(class_ids)),
            Inventory.used == 0,
        )
        .execution_options(synchronize_session=False)
    )
    if affected(done) != len(class_ids):
        busy = await session.scalars(
            select(Inventory.resource_class_id).where(
                Inventory.resource_provider_id == provider.id,
                Inventory.resource_class_id.in_(sorted(class_ids)),
                Inventory.used > 0,
            )
        )
        names = ", ".join(sorted(class_ids[ident] for ident in busy))
        raise conflict(
            f"{message}Inventory for '{names}' on resource provider '{provider.uuid}' in use.",
            code=INVENTORY_INUSE,
        )


def _write(row: Inventory, fields: InventoryFields) -> None:
    for name in ("total", "reserved", "min_unit", "max_unit", "step_size", "allocation_ratio"):
        setattr(row, name, getattr(fields, name))


async def _class_ids(request: Request, provider_uuid: str, names: list[str]) -> dict[str, int]:
    found, missing = await service(request).resource_classes.ids(names)
    if missing:
        raise BadRequest(
            f"Unknown resource class in inventory for resource provider {provider_uuid}: "
            f"No such resource class {missing[0]}."
        )
    return found


def _inventories_body(generation: int, rows: dict[str, Inventory]) -> dict[str, Any]:
    return {
        "resource_provider_generation": generation,
        "inventories": {name: inventory_view(row) for name, row in sorted(rows.items())},
    }


@routes.get("/resource_providers/{uuid}/inventories")
async def list_inventories(request: Request) -> Response:
    enforce(request, "resource_providers:inventories:list")
    placement = service(request)
    async with placement.db.session() as session:
        provider = await find_provider(session, request.path_params["uuid"])
        current = await _current(session, provider.id)
    names = await placement.resource_classes.names_of(current)
    by_name = {names[ident]: row for ident, row in current.items()}
    latest = max((row.updated_at for row in current.values()), default=None)
    return json_response(
        request, _inventories_body(provider.generation, by_name), last_modified=latest
    )


@routes.put("/resource_providers/{uuid}/inventories")
async def replace_inventories(request: Request) -> Response:
    enforce(request, "resource_providers:inventories:update")
    placement = service(request)
    provider = await path_provider(request)
    body = await body_as(request, AllInventories)
    if body.resource_provider_generation != provider.generation:
        raise conflict("resource provider generation conflict", code=CONCURRENT_UPDATE)
    ids = await _class_ids(request, provider.uuid, list(body.inventories))
    for name, fields in body.inventories.items():
        _check_capacity(request, provider.uuid, name, fields)
    async with placement.db.session() as session:
        generation = await bump_generation(session, provider.id, body.resource_provider_generation)
        current = await _current(session, provider.id)
        wanted = {ids[name]: (name, fields) for name, fields in body.inventories.items()}
        stale = {ident for ident in current if ident not in wanted}
        names = await placement.resource_classes.names_of(stale)
        await _remove(session, provider, names, "update conflict: ")
        result: dict[str, Inventory] = {}
        for ident, (name, fields) in wanted.items():
            row = current.get(ident) or Inventory(
                resource_provider_id=provider.id, resource_class_id=ident, used=0
            )
            _write(row, fields)
            session.add(row)
            result[name] = row
        await session.flush()
    return json_response(request, _inventories_body(generation, result))


@routes.post("/resource_providers/{uuid}/inventories")
async def create_inventory(request: Request) -> Response:
    enforce(request, "resource_providers:inventories:create")
    placement = service(request)
    provider = await path_provider(request)
    body = await body_as(request, NewInventory)
    name = body.resource_class
    found, missing = await placement.resource_classes.ids([name])
    if missing:
        raise BadRequest(
            f"Unable to create inventory for resource provider {provider.uuid}: No such "
            f"resource class {name}."
        )
    _check_capacity(request, provider.uuid, name, body)
    async with placement.db.session() as session:
        if (await _current(session, provider.id)).get(found[name]) is not None:
            raise conflict(
                f"Update conflict: Inventory for '{name}' on resource provider "
                f"'{provider.uuid}' already exists."
            )
        generation = await bump_generation(session, provider.id, None)
        row = Inventory(resource_provider_id=provider.id, resource_class_id=found[name], used=0)
        _write(row, body)
        session.add(row)
        await session.flush()
    return json_response(
        request,
        {**inventory_view(row), "resource_provider_generation": generation},
        201,
        headers=location(request, f"/resource_providers/{provider.uuid}/inventories/{name}"),
    )


@routes.delete("/resource_providers/{uuid}/inventories")
async def delete_inventories(request: Request) -> Response:
    require_version(request, 5, status=405)
    enforce(request, "resource_providers:inventories:delete")
    placement = service(request)
    async with placement.db.session() as session:
        provider = await find_provider(session, request.path_params["uuid"])
        current = await _current(session, provider.id)
        names = await placement.resource_classes.names_of(current)
        await bump_generation(session, provider.id, None)
        await _remove(session, provider, names, "")
    return no_content()


async def _one(request: Request) -> tuple[ResourceProvider, str, int | None]:
    """The provider, the class name of the path, and its id (None if no such class)."""
    placement = service(request)
    provider = await path_provider(request)
    name = request.path_params["resource_class"]
    found, _ = await placement.resource_classes.ids([name])
    return provider, name, found.get(name)


@routes.get("/resource_providers/{uuid}/inventories/{resource_class}")
async def show_inventory(request: Request) -> Response:
    enforce(request, "resource_providers:inventories:show")
    provider, name, ident = await _one(request)
    async with service(request).db.session() as session:
        row = (await _current(session, provider.id)).get(ident) if ident else None
    if row is None:
        raise NotFound(f"No inventory of class {name} for {provider.uuid}")
    return json_response(
        request,
        {**inventory_view(row), "resource_provider_generation": provider.generation},
        last_modified=row.updated_at,
    )


@routes.put("/resource_providers/{uuid}/inventories/{resource_class}")
async def update_inventory(request: Request) -> Response:
    enforce(request, "resource_providers:inventories:update")
    provider, name, ident = await _one(request)
    body = await body_as(request, OneInventory)
    if body.resource_provider_generation != provider.generation:
        raise conflict("resource provider generation conflict", code=CONCURRENT_UPDATE)
    _check_capacity(request, provider.uuid, name, body)
    async with service(request).db.session() as session:
        generation = await bump_generation(session, provider.id, body.resource_provider_generation)
        row = (await _current(session, provider.id)).get(ident) if ident else None
        if row is None:
            raise BadRequest(
                f"No inventory record with resource class for resource provider "
                f"{provider.uuid}: No inventory of class {name} found."
            )
        _write(row, body)
        await session.flush()
    return json_response(
        request, {**inventory_view(row), "resource_provider_generation": generation}
    )


@routes.delete("/resource_providers/{uuid}/inventories/{resource_class}")
async def delete_inventory(request: Request) -> Response:
    enforce(request, "resource_providers:inventories:delete")
    provider, name, ident = await _one(request)
    async with service(request).db.session() as session:
        row = (await _current(session, provider.id)).get(ident) if ident else None
        if row is None:
            raise NotFound(
                f"No inventory of class {name} found for delete: No inventory of class {name} "
                "found."
            )
        await bump_generation(session, provider.id, None)
        await _remove(
            session, provider, {row.resource_class_id: name},
            f"Unable to delete inventory of class {name}: ",
        )  # fmt: skip
    return no_content()
