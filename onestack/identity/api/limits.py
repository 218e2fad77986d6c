"""Unified limits: ``/v3/registered_limits`` (a service's defaults) and ``/v3/limits``
(per-project overrides), which services read to enforce their quotas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import (
    caller,
    committed,
    enforce,
    get_or_404,
    json,
    no_content,
    service,
)
from onestack.identity.models import Limit, Project, Region, RegisteredLimit, Service

routes = RouteTable()


def registered_view(request: Request, row: RegisteredLimit) -> dict[str, Any]:
    return {
        "id": row.id,
        "service_id": row.service_id,
        "region_id": row.region_id or None,
        "resource_name": row.resource_name,
        "default_limit": row.default_limit,
        "description": row.description or None,
        "links": views.links(request, f"registered_limits/{row.id}"),
    }


def limit_view(request: Request, row: Limit) -> dict[str, Any]:
    return {
        "id": row.id,
        "project_id": row.project_id,
        "domain_id": None,
        "service_id": row.service_id,
        "region_id": row.region_id or None,
        "resource_name": row.resource_name,
        "resource_limit": row.resource_limit,
        "description": row.description or None,
        "links": views.links(request, f"limits/{row.id}"),
    }


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < -1:
        raise BadRequest(f"Invalid input for field '{name}': an integer of -1 or more.")
    return value


def _entries(body: Any, key: str) -> list[dict[str, Any]]:
    entries = body.get(key) if isinstance(body, dict) else None
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        raise BadRequest(f"Invalid input: a non-empty list under '{key}' is expected.")
    return entries


async def _check_refs(session: AsyncSession, entry: dict[str, Any]) -> tuple[str, str]:
    service_id = str(entry.get("service_id", ""))
    if await session.get(Service, service_id) is None:
        raise BadRequest(f"Invalid input: service {service_id!r} does not exist.")
    region_id = str(entry.get("region_id") or "")
    if region_id and await session.get(Region, region_id) is None:
        raise BadRequest(f"Invalid input: region {region_id!r} does not exist.")
    if not isinstance(entry.get("resource_name"), str) or not entry["resource_name"]:
        raise BadRequest("Invalid input for field 'resource_name'.")
    return service_id, region_id


@routes.post("/v3/registered_limits")
async def create_registered(request: Request) -> Response:
    enforce(request, "create_registered_limits")
    entries = _entries(await json_body(request), "registered_limits")
    identity = service(request)
    try:
        async with identity.db.session() as session:
            rows = []
            for entry in entries:
                service_id, region_id = await _check_refs(session, entry)
                row = RegisteredLimit(
                    service_id=service_id,
                    region_id=region_id,
                    resource_name=entry["resource_name"],
                    default_limit=_count(entry.get("default_limit"), "default_limit"),
                    description=str(entry.get("description") or ""),
                )
                session.add(row)
                rows.append(row)
            await session.flush()
            await identity.tokens.changed(session)
            result = [registered_view(request, r) for r in rows]
    except IntegrityError:
        raise Conflict("Duplicate entry: that registered limit already exists.") from None
    await committed(request)
    return json({"registered_limits": result}, 201)


@routes.get("/v3/registered_limits")
async def list_registered(request: Request) -> Response:
    enforce(request, "list_registered_limits")
    query = select(RegisteredLimit)
    for name in ("service_id", "region_id", "resource_name"):
        if name in request.query_params:
            query = query.where(getattr(RegisteredLimit, name) == request.query_params[name])
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(RegisteredLimit.resource_name))).scalars()
        items = [registered_view(request, r) for r in rows]
    return json(views.collection(request, "registered_limits", items))


@routes.get("/v3/registered_limits/{limit_id}")
async def show_registered(request: Request) -> Response:
    enforce(request, "get_registered_limit")
    async with service(request).db.session() as session:
        row = await get_or_404(
            session, RegisteredLimit, request.path_params["limit_id"], "registered limit"
        )
        return json({"registered_limit": registered_view(request, row)})


@routes.patch("/v3/registered_limits/{limit_id}")
async def update_registered(request: Request) -> Response:
    enforce(request, "update_registered_limit")
    body = await json_body(request)
    entry = body.get("registered_limit") if isinstance(body, dict) else None
    if not isinstance(entry, dict):
        raise BadRequest("Invalid input: an object under 'registered_limit' is expected.")
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(
            session, RegisteredLimit, request.path_params["limit_id"], "registered limit"
        )
        if "default_limit" in entry:
            row.default_limit = _count(entry["default_limit"], "default_limit")
        if "description" in entry:
            row.description = str(entry["description"] or "")
        await identity.tokens.changed(session)
        result = registered_view(request, row)
    await committed(request)
    return json({"registered_limit": result})


@routes.delete("/v3/registered_limits/{limit_id}")
async def delete_registered(request: Request) -> Response:
    enforce(request, "delete_registered_limit")
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(
            session, RegisteredLimit, request.path_params["limit_id"], "registered limit"
        )
        await session.delete(row)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.post("/v3/limits")
async def create_limits(request: Request) -> Response:
    enforce(request, "create_limits")
    entries = _entries(await json_body(request), "limits")
    identity = service(request)
    try:
        async with identity.db.session() as session:
            rows = []
            for entry in entries:
                service_id, region_id = await _check_refs(session, entry)
                project_id = str(entry.get("project_id") or "")
                await get_or_404(session, Project, project_id, "project")
                registered = await session.scalar(
                    select(RegisteredLimit.id).where(
                        RegisteredLimit.service_id == service_id,
                        RegisteredLimit.region_id == region_id,
                        RegisteredLimit.resource_name == entry["resource_name"],
                    )
                )
                if registered is None:
                    raise BadRequest(
                        f"No registered limit for {entry['resource_name']} of service "
                        f"{service_id}: register its default first."
                    )
                row = Limit(
                    project_id=project_id,
                    service_id=service_id,
                    region_id=region_id,
                    resource_name=entry["resource_name"],
                    resource_limit=_count(entry.get("resource_limit"), "resource_limit"),
                    description=str(entry.get("description") or ""),
                )
                session.add(row)
                rows.append(row)
            await session.flush()
            await identity.tokens.changed(session)
            result = [limit_view(request, r) for r in rows]
    except IntegrityError:
        raise Conflict("Duplicate entry: that project already has this limit.") from None
    await committed(request)
    return json({"limits": result}, 201)


@routes.get("/v3/limits")
async def list_limits(request: Request) -> Response:
    context = caller(request)
    identity = service(request)
    query = select(Limit)
    if not identity.policy.check("identity:list_limits", context):
        # Everyone may read the limits of the project they are scoped to.
        enforce(request, "get_own_limits")
        query = query.where(Limit.project_id == context.project_id)
    for name in ("service_id", "region_id", "resource_name", "project_id"):
        if name in request.query_params:
            query = query.where(getattr(Limit, name) == request.query_params[name])
    async with identity.db.session() as session:
        rows = (await session.execute(query.order_by(Limit.resource_name))).scalars()
        items = [limit_view(request, r) for r in rows]
    return json(views.collection(request, "limits", items))


@routes.get("/v3/limits/model")
async def limit_model(request: Request) -> Response:
    return json(
        {
            "model": {
                "name": "flat",
                "description": (
                    "Limit enforcement and validation does not take project hierarchy into "
                    "consideration."
                ),
            }
        }
    )


@routes.get("/v3/limits/{limit_id}")
async def show_limit(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await get_or_404(session, Limit, request.path_params["limit_id"], "limit")
        enforce(request, "get_limit", {"project_id": row.project_id})
        return json({"limit": limit_view(request, row)})


@routes.patch("/v3/limits/{limit_id}")
async def update_limit(request: Request) -> Response:
    enforce(request, "update_limit")
    body = await json_body(request)
    entry = body.get("limit") if isinstance(body, dict) else None
    if not isinstance(entry, dict):
        raise BadRequest("Invalid input: an object under 'limit' is expected.")
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(session, Limit, request.path_params["limit_id"], "limit")
        if "resource_limit" in entry:
            row.resource_limit = _count(entry["resource_limit"], "resource_limit")
        if "description" in entry:
            row.description = str(entry["description"] or "")
        await identity.tokens.changed(session)
        result = limit_view(request, row)
    await committed(request)
    return json({"limit": result})


@routes.delete("/v3/limits/{limit_id}")
async def delete_limit(request: Request) -> Response:
    enforce(request, "delete_limit")
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(session, Limit, request.path_params["limit_id"], "limit")
        await session.delete(row)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()
