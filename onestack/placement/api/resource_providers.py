"""``/resource_providers``: providers and their trees."""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from pydantic import Field
from sqlalchemy import Select, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import (
    DUPLICATE_NAME,
    PROVIDER_CANNOT_DELETE_PARENT,
    PROVIDER_INUSE,
    Body,
    UUIDStr,
    at_least,
    body_as,
    canonical_uuid,
    check_query,
    conflict,
    enforce,
    find_provider,
    json_response,
    location,
    no_content,
    path_provider,
    service,
)
from onestack.placement.models import Allocation, ResourceProvider
from onestack.placement.queries import (
    UnknownName,
    all_conditions,
    resolve_group,
    single_provider_conditions,
)
from onestack.placement.query_params import provider_filter
from onestack.placement.views import provider_view

routes = RouteTable()

Parent = aliased(ResourceProvider, name="parent")
Root = aliased(ResourceProvider, name="root")


class NewProvider(Body):
    name: str = Field(max_length=200)
    uuid: UUIDStr | None = None
    parent_provider_uuid: UUIDStr | None = None


class ChangedProvider(Body):
    name: str = Field(max_length=200)
    parent_provider_uuid: UUIDStr | None = None


def provider_rows() -> Select[ResourceProvider, str, str]:
    """Providers with their parent's and root's uuids."""
    return (
        select(ResourceProvider, Parent.uuid, Root.uuid)
        .outerjoin(Parent, Parent.id == ResourceProvider.parent_provider_id)
        .join(Root, Root.id == ResourceProvider.root_provider_id)
    )


async def show_one(
    request: Request, session: AsyncSession, ident: int, status: int = 200
) -> Response:
    row, parent_uuid, root_uuid = (
        await session.execute(provider_rows().where(ResourceProvider.id == ident))
    ).one()
    body = provider_view(request, row.uuid, row.name, row.generation, parent_uuid, root_uuid)
    return json_response(request, body, status, last_modified=row.updated_at)


@routes.get("/resource_providers")
async def list_providers(request: Request) -> Response:
    enforce(request, "resource_providers:list")
    allowed = {"name", "uuid"}
    for key, since in (("member_of", 3), ("resources", 4), ("in_tree", 14), ("required", 18)):
        if at_least(request, since):
            allowed.add(key)
    check_query(request, allowed)
    params = request.query_params
    group = provider_filter(request)
    placement = service(request)
    query = provider_rows().order_by(ResourceProvider.id)
    if "name" in params:
        query = query.where(ResourceProvider.name == params["name"])
    if "uuid" in params:
        try:
            query = query.where(ResourceProvider.uuid == canonical_uuid(params["uuid"]))
        except ValueError:
            raise BadRequest(
                f"Invalid query string parameters: '{params['uuid']}' is not a 'uuid'"
            ) from None
    async with placement.db.session() as session:
        try:
            wanted = await resolve_group(
                session, placement.resource_classes, placement.traits, group
            )
        except UnknownName as exc:
            if exc.kind == "trait":
                raise BadRequest(
                    f'Invalid trait(s) in "required" parameter: No such trait(s): '
                    f"{', '.join(exc.names)}."
                ) from None
            raise BadRequest(
                "Invalid resource class in resources parameter: No such resource class "
                f"{exc.names[0]}."
            ) from None
        if wanted is None:
            rows = []
        else:
            query = query.where(all_conditions(single_provider_conditions(wanted)))
            rows = list((await session.execute(query)).all())
    providers = [
        provider_view(request, row.uuid, row.name, row.generation, parent, root)
        for row, parent, root in rows
    ]
    latest = max((row.updated_at for row, _, _ in rows), default=None)
    return json_response(request, {"resource_providers": providers}, last_modified=latest)


@routes.post("/resource_providers")
async def create_provider(request: Request) -> Response:
    enforce(request, "resource_providers:create")
    body = await body_as(request, NewProvider)
    if body.parent_provider_uuid is not None and not at_least(request, 14):
        raise BadRequest("JSON does not validate: Additional properties are not allowed.")
    provider_uuid = body.uuid or str(uuidlib.uuid4())
    placement = service(request)
    try:
        async with placement.db.session() as session:
            row = ResourceProvider(uuid=provider_uuid, name=body.name, generation=0)
            if body.parent_provider_uuid is not None:
                parent = await session.scalar(
                    select(ResourceProvider).where(
                        ResourceProvider.uuid == body.parent_provider_uuid
                    )
                )
                if parent is None:
                    raise BadRequest(
                        f'Unable to create resource provider "{body.name}", {provider_uuid}: '
                        "parent provider UUID does not exist."
                    )
                row.parent_provider_id = parent.id
                row.root_provider_id = parent.root_provider_id
            session.add(row)
            await session.flush()
            if row.root_provider_id is None:
                row.root_provider_id = row.id
                await session.flush()
            headers = location(request, f"/resource_providers/{provider_uuid}")
            if not at_least(request, 20):
                return no_content_created(headers)
            response = await show_one(request, session, row.id)
            response.headers.update(headers)
            return response
    except IntegrityError:
        raise await duplicate(placement.db, provider_uuid, body.name) from None


def no_content_created(headers: dict[str, str]) -> Response:
    return Response(status_code=201, headers=headers)


async def duplicate(db: Any, provider_uuid: str, name: str) -> Exception:
    """The 409 for a provider whose uuid or name is taken."""
    async with db.session() as session:
        taken = []
        if await session.scalar(select(exists().where(ResourceProvider.uuid == provider_uuid))):
            taken.append(f"uuid: {provider_uuid}")
        if await session.scalar(select(exists().where(ResourceProvider.name == name))):
            taken.append(f"name: {name}")
    return conflict(
        f"Conflicting resource provider {', '.join(taken) or name} already exists.",
        code=DUPLICATE_NAME,
    )


@routes.get("/resource_providers/{uuid}")
async def show_provider(request: Request) -> Response:
    enforce(request, "resource_providers:show")
    async with service(request).db.session() as session:
        row = await find_provider(session, request.path_params["uuid"])
        return await show_one(request, session, row.id)


@routes.put("/resource_providers/{uuid}")
async def update_provider(request: Request) -> Response:
    enforce(request, "resource_providers:update")
    placement = service(request)
    row = await path_provider(request)
    body = await body_as(request, ChangedProvider)
    reparent = "parent_provider_uuid" in body.model_fields_set
    if reparent and not at_least(request, 14):
        raise BadRequest("JSON does not validate: Additional properties are not allowed.")
    try:
        async with placement.db.session() as session:
            row = await find_provider(session, request.path_params["uuid"])
            row.name = body.name
            if reparent:
                await _reparent(request, session, row, body.parent_provider_uuid)
            await session.flush()
            return await show_one(request, session, row.id)
    except IntegrityError:
        raise conflict(
            f"Conflicting resource provider {body.name} already exists.", code=DUPLICATE_NAME
        ) from None


async def _reparent(
    request: Request, session: AsyncSession, row: ResourceProvider, parent_uuid: str | None
) -> None:
    """Move ``row`` (and its subtree) under ``parent_uuid``, or make it a root."""
    may_move = at_least(request, 37)
    failure = f"Unable to save resource provider {row.uuid}: "
    if parent_uuid is None:
        if row.parent_provider_id is None:
            return
        if not may_move:
            raise BadRequest(failure + "un-parenting a provider is not currently allowed.")
        new_parent, new_root = None, row.id
    else:
        parent = await session.scalar(
            select(ResourceProvider).where(ResourceProvider.uuid == parent_uuid)
        )
        if parent is None:
            raise BadRequest(failure + "parent provider UUID does not exist.")
        if parent.id == row.parent_provider_id:
            return
        if row.parent_provider_id is not None and not may_move:
            raise BadRequest(failure + "re-parenting a provider is not currently allowed.")
        if parent.id in await _subtree(session, row):
            raise BadRequest(failure + "creating loop in the provider tree is not allowed.")
        new_parent, new_root = parent.id, parent.root_provider_id or parent.id
    subtree = await _subtree(session, row)
    await session.execute(
        update(ResourceProvider)
        .where(ResourceProvider.id.in_(sorted(subtree - {row.id})))
        .values(root_provider_id=new_root)
        .execution_options(synchronize_session=False)
    )
    row.parent_provider_id = new_parent
    row.root_provider_id = new_root


async def _subtree(session: AsyncSession, row: ResourceProvider) -> set[int]:
    """Ids of ``row`` and every provider below it."""
    pairs = (
        await session.execute(
            select(ResourceProvider.id, ResourceProvider.parent_provider_id).where(
                ResourceProvider.root_provider_id == row.root_provider_id
            )
        )
    ).all()
    children: dict[int, list[int]] = {}
    for ident, parent in pairs:
        if parent is not None:
            children.setdefault(parent, []).append(ident)
    found, todo = set(), [row.id]
    while todo:
        ident = todo.pop()
        if ident not in found:
            found.add(ident)
            todo += children.get(ident, [])
    return found


@routes.delete("/resource_providers/{uuid}")
async def delete_provider(request: Request) -> Response:
    enforce(request, "resource_providers:delete")
    async with service(request).db.session() as session:
        row = await find_provider(session, request.path_params["uuid"])
        if await session.scalar(
            select(exists().where(ResourceProvider.parent_provider_id == row.id))
        ):
            raise conflict(
                f"Unable to delete parent resource provider {row.uuid}: It has child resource "
                "providers.",
                code=PROVIDER_CANNOT_DELETE_PARENT,
            )
        in_use = await session.scalar(
            select(func.count())
            .select_from(Allocation)
            .where(Allocation.resource_provider_id == row.id)
        )
        if in_use:
            raise conflict(
                f"Unable to delete resource provider {row.uuid}: Resource provider has "
                "allocations.",
                code=PROVIDER_INUSE,
            )
        # Inventories, traits and aggregate links go with it (ON DELETE CASCADE needs
        # SQLite's foreign keys on, which they are; say it explicitly for every backend).
        for table in ("placement_inventories", "placement_provider_traits",
                      "placement_provider_aggregates"):  # fmt: skip
            model_table = ResourceProvider.metadata.tables[table]
            await session.execute(
                delete(model_table).where(model_table.c.resource_provider_id == row.id)
            )
        await session.delete(row)
    return no_content()
