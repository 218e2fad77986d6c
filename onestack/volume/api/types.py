"""``/v3/types``: volume types, their extra specs, and access of private types by project."""

from __future__ import annotations

import ast

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import (
    as_bool,
    body_of,
    enforce,
    invalid,
    is_admin,
    metadata_field,
    not_found,
    own,
    service,
    text_field,
)
from onestack.volume.api.lookups import default_type, find_type, type_visible
from onestack.volume.models import Volume, VolumeType, VolumeTypeAccess
from onestack.volume.views import type_view

routes = RouteTable()


async def _type(request: Request, session: AsyncSession) -> VolumeType:
    return await find_type(request, session, request.path_params["type_id"])


async def _admin_type(request: Request, session: AsyncSession) -> VolumeType:
    enforce(request, "manage_types")
    return await _type(request, session)


@routes.get("/v3/types")
async def list_types(request: Request) -> Response:
    enforce(request, "read", own(request))
    query = select(VolumeType).order_by(VolumeType.created_at, VolumeType.name)
    params = request.query_params
    if not is_admin(request):
        query = query.where(type_visible(request))
    elif params.get("is_public") not in (None, "None", "none"):
        query = query.where(VolumeType.is_public.is_(as_bool(params["is_public"], "is_public")))
    async with service(request).db.session() as session:
        rows = list((await session.execute(query)).scalars())
    wanted = {}
    if "extra_specs" in params:
        try:
            wanted = dict(ast.literal_eval(params["extra_specs"]))
        except (ValueError, SyntaxError, TypeError):
            raise invalid("Invalid extra_specs filter.") from None
    rows = [r for r in rows if all((r.extra_specs or {}).get(k) == v for k, v in wanted.items())]
    return JSONResponse({"volume_types": [type_view(request, r) for r in rows]})


@routes.get("/v3/types/default")
async def show_default_type(request: Request) -> Response:
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        row = await default_type(request, session)
    return JSONResponse({"volume_type": type_view(request, row)})


@routes.post("/v3/types")
async def create_type(request: Request) -> Response:
    enforce(request, "manage_types")
    body = body_of(await json_body(request), "volume_type")
    name = text_field(body, "name")
    if not name or not name.strip():
        raise invalid("A volume type needs a name.")
    is_public = as_bool(body.get("os-volume-type-access:is_public", body.get("is_public", True)),
                        "is_public")  # fmt: skip
    row = VolumeType(
        name=name.strip(),
        description=text_field(body, "description"),
        is_public=is_public,
        extra_specs=metadata_field(body.get("extra_specs"), "extra_specs"),
    )
    try:
        async with service(request).db.session() as session:
            session.add(row)
    except IntegrityError:
        raise Conflict(f"Volume Type {name} already exists.") from None
    return JSONResponse({"volume_type": type_view(request, row)})


@routes.get("/v3/types/{type_id}")
async def show_type(request: Request) -> Response:
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        row = await _type(request, session)
    return JSONResponse({"volume_type": type_view(request, row)})


@routes.put("/v3/types/{type_id}")
async def update_type(request: Request) -> Response:
    body = body_of(await json_body(request), "volume_type")
    try:
        async with service(request).db.session() as session:
            row = await _admin_type(request, session)
            if "name" in body:
                name = text_field(body, "name")
                if not name or not name.strip():
                    raise invalid("A volume type's name cannot be empty.")
                if row.name == service(request).config.default_volume_type:
                    raise invalid("The default volume type cannot be renamed.")
                row.name = name.strip()
            if "description" in body:
                row.description = text_field(body, "description")
            if "is_public" in body:
                row.is_public = as_bool(body["is_public"], "is_public")
            await session.flush()
            rendered = type_view(request, row)
    except IntegrityError:
        raise Conflict(f"Volume Type {body.get('name')} already exists.") from None
    return JSONResponse({"volume_type": rendered})


@routes.delete("/v3/types/{type_id}")
async def delete_type(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _admin_type(request, session)
        if row.name == service(request).config.default_volume_type:
            raise invalid("The default volume type cannot be deleted.")
        used = await session.scalar(
            select(func.count()).select_from(Volume).where(Volume.volume_type_id == row.id)
        )
        if used:
            raise invalid("Target volume type is still in use.")
        await session.delete(row)
    return Response(status_code=202)


# Extra specs ---------------------------------------------------------------------------


@routes.get("/v3/types/{type_id}/extra_specs")
async def list_extra_specs(request: Request) -> Response:
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        row = await _type(request, session)
    return JSONResponse({"extra_specs": dict(row.extra_specs or {})})


@routes.post("/v3/types/{type_id}/extra_specs")
async def set_extra_specs(request: Request) -> Response:
    data = await json_body(request)
    if not isinstance(data, dict) or "extra_specs" not in data:
        raise invalid("Missing required element 'extra_specs' in request body.")
    specs = metadata_field(data["extra_specs"], "extra_specs")
    async with service(request).db.session() as session:
        row = await _admin_type(request, session)
        row.extra_specs = {**(row.extra_specs or {}), **specs}
    return JSONResponse({"extra_specs": specs})


@routes.get("/v3/types/{type_id}/extra_specs/{key}")
async def show_extra_spec(request: Request) -> Response:
    enforce(request, "read", own(request))
    key = request.path_params["key"]
    async with service(request).db.session() as session:
        row = await _type(request, session)
    if key not in (row.extra_specs or {}):
        raise NotFound(f"Volume Type {row.id} has no extra specs with key {key}.")
    return JSONResponse({key: row.extra_specs[key]})


@routes.put("/v3/types/{type_id}/extra_specs/{key}")
async def update_extra_spec(request: Request) -> Response:
    key = request.path_params["key"]
    spec = metadata_field(await json_body(request), "extra spec")
    if len(spec) > 1:
        raise invalid("Request body contains too many items.")
    if key not in spec:
        raise invalid("Request body and URI mismatch.")
    async with service(request).db.session() as session:
        row = await _admin_type(request, session)
        row.extra_specs = {**(row.extra_specs or {}), key: spec[key]}
    return JSONResponse(spec)


@routes.delete("/v3/types/{type_id}/extra_specs/{key}")
async def delete_extra_spec(request: Request) -> Response:
    key = request.path_params["key"]
    async with service(request).db.session() as session:
        row = await _admin_type(request, session)
        if key not in (row.extra_specs or {}):
            raise NotFound(f"Volume Type {row.id} has no extra specs with key {key}.")
        row.extra_specs = {k: v for k, v in row.extra_specs.items() if k != key}
    return Response(status_code=202)


@routes.get("/v3/types/{type_id}/encryption")
async def show_encryption(request: Request) -> Response:
    """No volume type is encrypted here: Cinder answers an empty object then."""
    enforce(request, "read", own(request))
    async with service(request).db.session() as session:
        await _type(request, session)
    return JSONResponse({})


# Type access ---------------------------------------------------------------------------


@routes.get("/v3/types/{type_id}/os-volume-type-access")
async def list_type_access(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await _admin_type(request, session)
        if row.is_public:
            raise not_found("Access list for public volume type", row.id)
        projects = (
            await session.execute(
                select(VolumeTypeAccess.project_id).where(VolumeTypeAccess.volume_type_id == row.id)
            )
        ).scalars()
        items = [{"volume_type_id": row.id, "project_id": p} for p in projects]
    return JSONResponse({"volume_type_access": items})


@routes.post("/v3/types/{type_id}/action")
async def type_action(request: Request) -> Response:
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise invalid("The action body must hold exactly one action.")
    [(name, argument)] = data.items()
    if name not in ("addProjectAccess", "removeProjectAccess"):
        raise invalid(f"Action {name} is not supported.")
    project = argument.get("project") if isinstance(argument, dict) else None
    if not isinstance(project, str) or not project:
        raise invalid("project is required.")
    async with service(request).db.session() as session:
        row = await _admin_type(request, session)
        if row.is_public:
            raise invalid(
                "Invalid volume type: Type access modification is not applicable to public "
                "volume type."
            )
        key = (VolumeTypeAccess.volume_type_id == row.id, VolumeTypeAccess.project_id == project)
        found = await session.scalar(select(VolumeTypeAccess.project_id).where(*key))
        if name == "addProjectAccess":
            if found is not None:
                raise Conflict(
                    f"Volume type access for {row.id}/{project} combination already exists."
                )
            session.add(VolumeTypeAccess(volume_type_id=row.id, project_id=project))
        else:
            if found is None:
                raise NotFound(f"Volume type access not found for {row.id}/{project} combination.")
            await session.execute(delete(VolumeTypeAccess).where(*key))
    return Response(status_code=202)
