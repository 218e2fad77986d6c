"""``/flavors``: list, show, create, update (description), delete; extra specs
(``os-extra_specs``) and access to private flavors (``os-flavor-access``)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import (
    as_bool,
    as_int,
    at_least,
    body_of,
    caller,
    enforce,
    is_admin,
    limit_marker,
    own,
    service,
)
from onestack.compute.api.lookups import can_use_flavor, extra_specs_of, find_flavor
from onestack.compute.models import Flavor, FlavorExtraSpec, FlavorProject
from onestack.compute.views import flavor_view
from onestack.core.asgi.errors import BadRequest, Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()

NAME = re.compile(r"^(?! )[^\x00-\x1f]{1,255}(?<! )$")
FLAVOR_ID = re.compile(r"^(?! )[\w.\- ]{1,255}(?<! )$")
SPEC_KEY = re.compile(r"^[\w.\-: ]{1,255}$")
SORT_KEYS = {
    "flavorid": Flavor.flavorid, "id": Flavor.flavorid, "name": Flavor.name,
    "memory_mb": Flavor.memory_mb, "vcpus": Flavor.vcpus, "root_gb": Flavor.root_gb,
    "created_at": Flavor.created_at, "swap": Flavor.swap, "ephemeral_gb": Flavor.ephemeral_gb,
    "rxtx_factor": Flavor.rxtx_factor, "description": Flavor.description,
}  # fmt: skip


async def _flavor(request: Request, session: AsyncSession) -> Flavor:
    flavor_id = request.path_params["flavor_id"]
    flavor = await find_flavor(session, flavor_id)
    if flavor is None or not await can_use_flavor(request, session, flavor):
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return flavor


async def _listing(request: Request, *, detail: bool) -> Response:
    enforce(request, "read", own(request))
    params = request.query_params
    query = select(Flavor)
    admin = is_admin(request)
    text = params.get("is_public")
    flag = True if text is None else None if text.lower() == "none" else as_bool(text, "is_public")
    mine = Flavor.id.in_(
        select(FlavorProject.flavor_id).where(
            FlavorProject.project_id == caller(request).project_id
        )
    )
    if admin:
        if flag is not None:
            query = query.where(Flavor.is_public.is_(flag))
    elif flag is False:
        query = query.where(Flavor.is_public.is_(False), mine)
    else:
        query = query.where(or_(Flavor.is_public.is_(True), mine))
    if "minRam" in params:
        query = query.where(Flavor.memory_mb >= as_int(params["minRam"], "minRam"))
    if "minDisk" in params:
        query = query.where(Flavor.root_gb >= as_int(params["minDisk"], "minDisk"))
    sort_key = params.get("sort_key", "flavorid")
    if sort_key not in SORT_KEYS:
        raise BadRequest(f"Invalid sort_key {sort_key!r}.")
    column = SORT_KEYS[sort_key]
    descending = params.get("sort_dir", "asc") == "desc"
    query = query.order_by(column.desc() if descending else column.asc(), Flavor.id)
    limit, marker = limit_marker(request)
    async with service(request).db.session() as session:
        flavors = list((await session.execute(query)).scalars())
        if marker is not None:
            ids = [f.flavorid for f in flavors]
            if marker not in ids:
                raise BadRequest(f"marker [{marker}] not found")
            flavors = flavors[ids.index(marker) + 1 :]
        if limit is not None:
            flavors = flavors[:limit]
        specs = {}
        if detail and at_least(request, "2.61"):
            for flavor in flavors:
                specs[flavor.id] = await extra_specs_of(session, flavor)
    views = [
        flavor_view(request, f, specs.get(f.id) if detail else None, detail=detail) for f in flavors
    ]
    return JSONResponse({"flavors": views})


@routes.get("/v2.1/flavors")
async def list_flavors(request: Request) -> Response:
    return await _listing(request, detail=False)


@routes.get("/v2.1/flavors/detail")
async def list_flavors_detail(request: Request) -> Response:
    return await _listing(request, detail=True)


@routes.get("/v2.1/flavors/{flavor_id}")
async def show_flavor(request: Request) -> Response:
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        specs = await extra_specs_of(session, flavor)
    return JSONResponse({"flavor": flavor_view(request, flavor, specs)})


def _size(body: dict[str, Any], key: str, *, minimum: int, default: int | None = None) -> int:
    if key not in body or body[key] in ("", None):
        if default is None:
            raise BadRequest(f"Invalid input for field/attribute flavor. '{key}' is required.")
        return default
    return as_int(body[key], key, minimum=minimum, maximum=2**31 - 1)


@routes.post("/v2.1/flavors")
async def create_flavor(request: Request) -> Response:
    enforce(request, "manage_flavors")
    body = body_of(await json_body(request), "flavor")
    name = str(body.get("name", "")).strip() if isinstance(body.get("name"), str) else ""
    if not name or not NAME.match(name):
        raise BadRequest("Invalid input for field/attribute name.")
    flavor_id = body.get("id")
    if flavor_id in (None, "", "auto"):
        flavor_id = str(uuid.uuid4())
    flavor_id = str(flavor_id)
    if not FLAVOR_ID.match(flavor_id):
        raise BadRequest(f"Invalid input for field/attribute id. Value: {flavor_id}.")
    rxtx = body.get("rxtx_factor", 1.0)
    try:
        rxtx = float(rxtx)
    except (TypeError, ValueError):
        raise BadRequest("Invalid input for field/attribute rxtx_factor.") from None
    if rxtx <= 0:
        raise BadRequest("Invalid input for field/attribute rxtx_factor.")
    description = body.get("description")
    if description is not None and not at_least(request, "2.55"):
        raise BadRequest("Additional properties are not allowed ('description' was unexpected)")
    flavor = Flavor(
        flavorid=flavor_id,
        name=name,
        memory_mb=_size(body, "ram", minimum=1),
        vcpus=_size(body, "vcpus", minimum=1),
        root_gb=_size(body, "disk", minimum=0),
        ephemeral_gb=_size(body, "OS-FLV-EXT-DATA:ephemeral", minimum=0, default=0),
        swap=_size(body, "swap", minimum=0, default=0),
        rxtx_factor=rxtx,
        is_public=as_bool(body.get("os-flavor-access:is_public", True), "is_public"),
        description=description,
    )
    db = service(request).db
    try:
        async with db.session() as session:
            if (await session.execute(select(Flavor.id).where(Flavor.name == name))).first():
                raise Conflict(f"Flavor with name {name} already exists.")
            if await find_flavor(session, flavor_id) is not None:
                raise Conflict(f"Flavor with ID {flavor_id} already exists.")
            session.add(flavor)
            if not flavor.is_public and caller(request).project_id:
                await session.flush()
                session.add(
                    FlavorProject(flavor_id=flavor.id, project_id=caller(request).project_id)
                )
    except IntegrityError:
        raise Conflict(f"Flavor with ID {flavor_id} already exists.") from None
    return JSONResponse({"flavor": flavor_view(request, flavor, {})})


@routes.put("/v2.1/flavors/{flavor_id}")
async def update_flavor(request: Request) -> Response:
    enforce(request, "manage_flavors")
    if not at_least(request, "2.55"):
        raise NotFound("The resource could not be found.")
    body = body_of(await json_body(request), "flavor")
    if set(body) != {"description"}:
        raise BadRequest("Only the description of a flavor can be changed.")
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        flavor.description = body["description"]
        specs = await extra_specs_of(session, flavor)
    return JSONResponse({"flavor": flavor_view(request, flavor, specs)})


@routes.delete("/v2.1/flavors/{flavor_id}")
async def delete_flavor(request: Request) -> Response:
    enforce(request, "manage_flavors")
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        await session.delete(flavor)
    return Response(status_code=202)


# ----- extra specs -------------------------------------------------------------------


def _check_specs(specs: Any) -> dict[str, str]:
    if not isinstance(specs, dict):
        raise BadRequest("Invalid input for field/attribute extra_specs.")
    checked = {}
    for key, value in specs.items():
        if not SPEC_KEY.match(str(key)):
            raise BadRequest(f"Invalid input for field/attribute extra_specs. Key {key!r}.")
        if isinstance(value, bool):
            value = str(value).lower()
        if not isinstance(value, (str, int, float)) or len(str(value)) > 255:
            raise BadRequest(f"Invalid input for field/attribute extra_specs. Value of {key}.")
        checked[str(key)] = str(value)
    return checked


@routes.get("/v2.1/flavors/{flavor_id}/os-extra_specs")
async def list_extra_specs(request: Request) -> Response:
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        specs = await extra_specs_of(session, flavor)
    return JSONResponse({"extra_specs": specs})


async def _put_specs(session: AsyncSession, flavor: Flavor, specs: dict[str, str]) -> None:
    for key, value in specs.items():
        row = (
            await session.execute(
                select(FlavorExtraSpec).where(
                    FlavorExtraSpec.flavor_id == flavor.id, FlavorExtraSpec.key == key
                )
            )
        ).scalar_one_or_none()
        if row is None:
            session.add(FlavorExtraSpec(flavor_id=flavor.id, key=key, value=value))
        else:
            row.value = value


@routes.post("/v2.1/flavors/{flavor_id}/os-extra_specs")
async def create_extra_specs(request: Request) -> Response:
    enforce(request, "manage_flavors")
    data = await json_body(request)
    specs = _check_specs(data.get("extra_specs") if isinstance(data, dict) else None)
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        await _put_specs(session, flavor, specs)
    return JSONResponse({"extra_specs": specs})


@routes.get("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}")
async def show_extra_spec(request: Request) -> Response:
    enforce(request, "read", own(request))
    key = request.path_params["key"]
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        specs = await extra_specs_of(session, flavor)
    if key not in specs:
        raise NotFound(f"Flavor {flavor.flavorid} has no extra specs with key {key}.")
    return JSONResponse({key: specs[key]})


@routes.put("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}")
async def update_extra_spec(request: Request) -> Response:
    enforce(request, "manage_flavors")
    key = request.path_params["key"]
    specs = _check_specs(await json_body(request))
    if set(specs) != {key}:
        raise BadRequest("Request body and URI mismatch")
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        await _put_specs(session, flavor, specs)
    return JSONResponse(specs)


@routes.delete("/v2.1/flavors/{flavor_id}/os-extra_specs/{key}")
async def delete_extra_spec(request: Request) -> Response:
    enforce(request, "manage_flavors")
    key = request.path_params["key"]
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        result = await session.execute(
            delete(FlavorExtraSpec).where(
                FlavorExtraSpec.flavor_id == flavor.id, FlavorExtraSpec.key == key
            )
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFound(f"Flavor {flavor.flavorid} has no extra specs with key {key}.")
    return Response(status_code=200)


# ----- access ------------------------------------------------------------------------


async def _access(session: AsyncSession, flavor: Flavor) -> dict[str, Any]:
    rows = (
        await session.execute(select(FlavorProject).where(FlavorProject.flavor_id == flavor.id))
    ).scalars()
    return {
        "flavor_access": [
            {"flavor_id": flavor.flavorid, "tenant_id": row.project_id} for row in rows
        ]
    }


@routes.get("/v2.1/flavors/{flavor_id}/os-flavor-access")
async def list_access(request: Request) -> Response:
    enforce(request, "manage_flavors")
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        if flavor.is_public:
            raise NotFound("Access list not available for public flavors.")
        return JSONResponse(await _access(session, flavor))


@routes.post("/v2.1/flavors/{flavor_id}/action")
async def flavor_action(request: Request) -> Response:
    enforce(request, "manage_flavors")
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise BadRequest("Exactly one flavor action is expected.")
    ((action, args),) = data.items()
    if action not in ("addTenantAccess", "removeTenantAccess") or not isinstance(args, dict):
        raise BadRequest(f"Invalid flavor action {action!r}.")
    tenant = args.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise BadRequest("Invalid input for field/attribute tenant.")
    async with service(request).db.session() as session:
        flavor = await _flavor(request, session)
        if flavor.is_public:
            raise Conflict("Can not add access to a public flavor.")
        existing = (
            await session.execute(
                select(FlavorProject).where(
                    FlavorProject.flavor_id == flavor.id, FlavorProject.project_id == tenant
                )
            )
        ).scalar_one_or_none()
        if action == "addTenantAccess":
            if existing is not None:
                raise Conflict(
                    f"Flavor access already exists for flavor {flavor.flavorid} and project "
                    f"{tenant} combination."
                )
            session.add(FlavorProject(flavor_id=flavor.id, project_id=tenant))
        else:
            if existing is None:
                raise NotFound(
                    f"Flavor access not found for {flavor.flavorid} / {tenant} combination."
                )
            await session.delete(existing)
        await session.flush()
        return JSONResponse(await _access(session, flavor))
