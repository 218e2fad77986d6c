"""``/resource_classes`` (1.2 on): the standard classes and custom ``CUSTOM_*`` ones."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import (
    Body,
    at_least,
    body_as,
    conflict,
    enforce,
    json_response,
    location,
    no_content,
    require_version,
    service,
)
from onestack.placement.models import Inventory, ResourceClass
from onestack.placement.views import resource_class_view

routes = RouteTable()

CUSTOM = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
CustomName = Annotated[str, StringConstraints(pattern=r"^CUSTOM_[A-Z0-9_]+$", max_length=255)]


class NamedClass(Body):
    name: CustomName


def _location(request: Request, name: str) -> dict[str, str]:
    return location(request, f"/resource_classes/{name}")


async def _find(request: Request, name: str) -> ResourceClass:
    async with service(request).db.session() as session:
        row = await session.scalar(select(ResourceClass).where(ResourceClass.name == name))
    if row is None:
        raise NotFound(f"No such resource class {name}.")
    return row


async def _create(request: Request, name: str) -> bool:
    """Add a custom class; False when it already exists."""
    placement = service(request)
    try:
        async with placement.db.session() as session:
            row = ResourceClass(name=name)
            session.add(row)
            await session.flush()
            ident = row.id
    except IntegrityError:
        return False
    placement.resource_classes.remember(name, ident)
    return True


@routes.get("/resource_classes")
async def list_classes(request: Request) -> Response:
    require_version(request, 2)
    enforce(request, "resource_classes:list")
    async with service(request).db.session() as session:
        names = list(await session.scalars(select(ResourceClass.name).order_by(ResourceClass.id)))
    return json_response(
        request, {"resource_classes": [resource_class_view(request, name) for name in names]}
    )


@routes.post("/resource_classes")
async def create_class(request: Request) -> Response:
    require_version(request, 2)
    enforce(request, "resource_classes:create")
    body = await body_as(request, NamedClass)
    if not await _create(request, body.name):
        raise conflict(
            f"Conflicting resource class already exists: {body.name}",
            code="placement.duplicate_name",
        )
    return Response(status_code=201, headers=_location(request, body.name))


@routes.get("/resource_classes/{name}")
async def show_class(request: Request) -> Response:
    require_version(request, 2)
    enforce(request, "resource_classes:show")
    row = await _find(request, request.path_params["name"])
    return json_response(
        request, resource_class_view(request, row.name), last_modified=row.updated_at
    )


@routes.put("/resource_classes/{name}")
async def put_class(request: Request) -> Response:
    require_version(request, 2)
    enforce(request, "resource_classes:update")
    name = request.path_params["name"]
    placement = service(request)
    if at_least(request, 7):
        if not CUSTOM.match(name) or len(name) > 255:
            raise BadRequest(
                f"JSON does not validate: '{name}' does not match '^CUSTOM_[A-Z0-9_]+$'"
            )
        created = await _create(request, name)
        if created:
            return Response(status_code=201, headers=_location(request, name))
        return no_content(_location(request, name))
    # 1.2 to 1.6: rename a custom class.
    row = await _find(request, name)
    body = await body_as(request, NamedClass)
    if name in placement.resource_classes.standard:
        raise BadRequest(f"Cannot update standard resource class {name}")
    try:
        async with placement.db.session() as session:
            row = await session.get_one(ResourceClass, row.id)
            row.name = body.name
    except IntegrityError:
        raise conflict(
            f"Resource class already exists: {body.name}", code="placement.duplicate_name"
        ) from None
    placement.resource_classes.forget(name)
    placement.resource_classes.remember(body.name, row.id)
    return json_response(request, resource_class_view(request, body.name))


@routes.delete("/resource_classes/{name}")
async def delete_class(request: Request) -> Response:
    require_version(request, 2)
    enforce(request, "resource_classes:delete")
    name = request.path_params["name"]
    placement = service(request)
    row = await _find(request, name)
    if name in placement.resource_classes.standard:
        raise BadRequest(
            f"Error in delete resource class: Cannot delete standard resource class {name}."
        )
    async with placement.db.session() as session:
        if await session.scalar(select(exists().where(Inventory.resource_class_id == row.id))):
            raise conflict(
                f"Error in delete resource class: Cannot delete resource class {name}. Class is "
                "in use in inventory.",
                code="placement.undefined_code",
            )
        await session.delete(await session.get_one(ResourceClass, row.id))
    placement.resource_classes.forget(name)
    return no_content()
