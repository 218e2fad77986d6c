"""``/traits`` and ``/resource_providers/{uuid}/traits`` (1.6 on)."""

from __future__ import annotations

import re
from typing import Annotated, Any, cast

from pydantic import StringConstraints
from sqlalchemy import CursorResult, delete, exists, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, NotFound
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import utcnow
from onestack.placement.api.common import (
    CONCURRENT_UPDATE,
    GENERATION_CHANGED,
    Body,
    body_as,
    bump_generation,
    check_query,
    conflict,
    enforce,
    json_response,
    location,
    no_content,
    path_provider,
    require_version,
    service,
)
from onestack.placement.models import ProviderTrait, ResourceProvider, Trait

routes = RouteTable()

CUSTOM = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
TraitName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class ProviderTraits(Body):
    traits: list[TraitName]
    resource_provider_generation: int


@routes.get("/traits")
async def list_traits(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "traits:list")
    check_query(request, {"name", "associated"})
    query = select(Trait.name).order_by(Trait.name)
    name = request.query_params.get("name")
    if name is not None:
        op, colon, value = name.partition(":")
        if not colon or op not in ("in", "startswith"):
            raise BadRequest(
                "Badly formatted name parameter. Expected name query string parameter in "
                f'form: ?name=[in|startswith]:[name1,name2|prefix]. Got: "{name}"'
            )
        if op == "in":
            query = query.where(Trait.name.in_(value.split(",")))
        else:
            query = query.where(Trait.name.startswith(value, autoescape=True))
    associated = request.query_params.get("associated")
    if associated is not None:
        if associated.lower() not in ("true", "false"):
            raise BadRequest('The query parameter "associated" only accepts "true" or "false"')
        linked = exists().where(ProviderTrait.trait_id == Trait.id)
        query = query.where(linked if associated.lower() == "true" else ~linked)
    async with service(request).db.session() as session:
        names = list(await session.scalars(query))
    return json_response(request, {"traits": names})


@routes.get("/traits/{name}")
async def show_trait(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "traits:show")
    name = request.path_params["name"]
    async with service(request).db.session() as session:
        found = await session.scalar(select(Trait.id).where(Trait.name == name))
    if found is None:
        raise NotFound(f"No such trait(s): {name}.")
    return no_content()


@routes.put("/traits/{name}")
async def put_trait(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "traits:update")
    name = request.path_params["name"]
    if not CUSTOM.match(name) or len(name) > 255:
        raise BadRequest(
            "The trait is invalid. A valid trait must be no longer than 255 characters, start "
            'with the prefix "CUSTOM_" and use following characters: "A"-"Z", "0"-"9" and "_"'
        )
    headers = location(request, f"/traits/{name}")
    placement = service(request)
    try:
        async with placement.db.session() as session:
            if await session.scalar(select(Trait.id).where(Trait.name == name)) is not None:
                return no_content(headers)
            now = utcnow()
            result = await session.execute(
                insert(Trait).values(name=name, created_at=now, updated_at=now)
            )
            key = cast(CursorResult[Any], result).inserted_primary_key
    except IntegrityError:
        return no_content(headers)  # created by a concurrent request: it exists now
    if key is not None:
        placement.traits.remember(name, int(key[0]))
    return Response(status_code=201, headers=headers)


@routes.delete("/traits/{name}")
async def delete_trait(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "traits:delete")
    name = request.path_params["name"]
    placement = service(request)
    if name in placement.traits.standard:
        raise BadRequest(f"Cannot delete standard trait {name}.")
    async with placement.db.session() as session:
        ident = await session.scalar(select(Trait.id).where(Trait.name == name))
        if ident is None:
            raise NotFound(f"No such trait(s): {name}.")
        if await session.scalar(select(exists().where(ProviderTrait.trait_id == ident))):
            raise conflict(
                f"The trait {name} is in use by a resource provider.",
                code="placement.undefined_code",
            )
        await session.execute(delete(Trait).where(Trait.id == ident))
    placement.traits.forget(name)
    return no_content()


async def _provider_traits(request: Request, provider_id: int) -> list[str]:
    async with service(request).db.session() as session:
        names = await session.scalars(
            select(Trait.name)
            .join(ProviderTrait, ProviderTrait.trait_id == Trait.id)
            .where(ProviderTrait.resource_provider_id == provider_id)
            .order_by(Trait.name)
        )
        return list(names)


@routes.get("/resource_providers/{uuid}/traits")
async def list_provider_traits(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "resource_providers:traits:list")
    provider = await path_provider(request)
    traits = await _provider_traits(request, provider.id)
    return json_response(
        request,
        {"traits": traits, "resource_provider_generation": provider.generation},
        last_modified=provider.updated_at,
    )


async def _set_traits(
    request: Request, provider: ResourceProvider, trait_ids: list[int], expected: int | None
) -> int:
    """Replace the provider's traits, bumping its generation (from ``expected`` if given)."""
    async with service(request).db.session() as session:
        generation = await bump_generation(session, provider.id, expected, GENERATION_CHANGED)
        await session.execute(
            delete(ProviderTrait).where(ProviderTrait.resource_provider_id == provider.id)
        )
        if trait_ids:
            await session.execute(
                insert(ProviderTrait),
                [{"resource_provider_id": provider.id, "trait_id": t} for t in sorted(trait_ids)],
            )
    return generation


@routes.put("/resource_providers/{uuid}/traits")
async def put_provider_traits(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "resource_providers:traits:update")
    placement = service(request)
    provider = await path_provider(request)
    body = await body_as(request, ProviderTraits)
    if body.resource_provider_generation != provider.generation:
        raise conflict(GENERATION_CHANGED, code=CONCURRENT_UPDATE)
    found, missing = await placement.traits.ids(body.traits)
    if missing:
        raise BadRequest(f"No such trait {', '.join(missing)}")
    generation = await _set_traits(
        request, provider, sorted(set(found.values())), body.resource_provider_generation
    )
    return json_response(
        request, {"traits": sorted(set(body.traits)), "resource_provider_generation": generation}
    )


@routes.delete("/resource_providers/{uuid}/traits")
async def delete_provider_traits(request: Request) -> Response:
    require_version(request, 6)
    enforce(request, "resource_providers:traits:delete")
    provider = await path_provider(request)
    await _set_traits(request, provider, [], provider.generation)
    return no_content()
