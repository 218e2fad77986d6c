"""``/v3/regions``, ``/v3/services`` and ``/v3/endpoints``: the service catalog."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import body_as
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import new_id
from onestack.identity import views
from onestack.identity.api.common import committed, enforce, get_or_404, json, no_content, service
from onestack.identity.api.crud import apply_changes, filtered
from onestack.identity.models import Endpoint, Region, Service
from onestack.identity.schemas import (
    EndpointBody,
    EndpointRequest,
    RegionBody,
    RegionRequest,
    ServiceRequest,
)

routes = RouteTable()


@routes.post("/v3/regions")
async def create_region(request: Request) -> Response:
    enforce(request, "create_region")
    body = (await body_as(request, RegionRequest)).region
    return await _store_region(request, body.id or new_id(), body)


@routes.put("/v3/regions/{region_id}")
async def create_region_with_id(request: Request) -> Response:
    """Keystone's create with a chosen id: the path names it, a body id must agree."""
    enforce(request, "create_region")
    body = (await body_as(request, RegionRequest)).region
    region_id = request.path_params["region_id"]
    if body.id is not None and body.id != region_id:
        raise BadRequest("The region id in the body does not match the URL.")
    return await _store_region(request, region_id, body)


async def _store_region(request: Request, region_id: str, body: RegionBody) -> Response:
    identity = service(request)
    async with identity.db.session() as session:
        if await session.get(Region, region_id) is not None:
            raise Conflict(
                f"Conflict occurred attempting to store region - Duplicate ID, {region_id}."
            )
        if body.parent_region_id:
            await get_or_404(session, Region, body.parent_region_id, "region")
        region = Region(
            id=region_id,
            description=body.description or "",
            parent_region_id=body.parent_region_id,
        )
        session.add(region)
        await identity.tokens.changed(session)
        result = views.region(request, region)
    await committed(request)
    return json({"region": result}, 201)


@routes.get("/v3/regions")
async def list_regions(request: Request) -> Response:
    enforce(request, "list_regions")
    query = filtered(select(Region), Region, request, ("parent_region_id",))
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(Region.id))).scalars()
        items = [views.region(request, r) for r in rows]
    return json(views.collection(request, "regions", items))


@routes.get("/v3/regions/{region_id}")
async def get_region(request: Request) -> Response:
    enforce(request, "get_region")
    async with service(request).db.session() as session:
        region = await get_or_404(session, Region, request.path_params["region_id"], "region")
        return json({"region": views.region(request, region)})


@routes.patch("/v3/regions/{region_id}")
async def update_region(request: Request) -> Response:
    enforce(request, "update_region")
    body = (await body_as(request, RegionRequest)).region
    identity = service(request)
    async with identity.db.session() as session:
        region = await get_or_404(session, Region, request.path_params["region_id"], "region")
        if body.parent_region_id:
            if body.parent_region_id == region.id:
                raise BadRequest("A region cannot be its own parent.")
            await get_or_404(session, Region, body.parent_region_id, "region")
        apply_changes(region, body, ("description", "parent_region_id"))
        await identity.tokens.changed(session)
        result = views.region(request, region)
    await committed(request)
    return json({"region": result})


@routes.delete("/v3/regions/{region_id}")
async def delete_region(request: Request) -> Response:
    enforce(request, "delete_region")
    identity = service(request)
    async with identity.db.session() as session:
        region = await get_or_404(session, Region, request.path_params["region_id"], "region")
        child = await session.scalar(select(Region.id).where(Region.parent_region_id == region.id))
        if child:
            raise Forbidden(f"Cannot delete region {region.id}: it has child regions.")
        await session.execute(
            update(Endpoint).where(Endpoint.region_id == region.id).values(region_id=None)
        )
        await session.delete(region)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.post("/v3/services")
async def create_service(request: Request) -> Response:
    enforce(request, "create_service")
    body = (await body_as(request, ServiceRequest)).service
    if not body.type:
        raise BadRequest("Invalid input for field 'type': a service needs a type.")
    identity = service(request)
    async with identity.db.session() as session:
        row = Service(
            type=body.type,
            name=body.name or "",
            description=body.description or "",
            enabled=True if body.enabled is None else body.enabled,
        )
        session.add(row)
        await identity.tokens.changed(session)
        result = views.service(request, row)
    await committed(request)
    return json({"service": result}, 201)


@routes.get("/v3/services")
async def list_services(request: Request) -> Response:
    enforce(request, "list_services")
    query = filtered(select(Service), Service, request, ("type", "name"))
    async with service(request).db.session() as session:
        rows = (await session.execute(query.order_by(Service.type))).scalars()
        items = [views.service(request, s) for s in rows]
    return json(views.collection(request, "services", items))


@routes.get("/v3/services/{service_id}")
async def get_service(request: Request) -> Response:
    enforce(request, "get_service")
    async with service(request).db.session() as session:
        row = await get_or_404(session, Service, request.path_params["service_id"], "service")
        return json({"service": views.service(request, row)})


@routes.patch("/v3/services/{service_id}")
async def update_service(request: Request) -> Response:
    enforce(request, "update_service")
    body = (await body_as(request, ServiceRequest)).service
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(session, Service, request.path_params["service_id"], "service")
        apply_changes(row, body, ("type", "name", "description", "enabled"))
        await identity.tokens.changed(session)
        result = views.service(request, row)
    await committed(request)
    return json({"service": result})


@routes.delete("/v3/services/{service_id}")
async def delete_service(request: Request) -> Response:
    enforce(request, "delete_service")
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(session, Service, request.path_params["service_id"], "service")
        await session.delete(row)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.post("/v3/endpoints")
async def create_endpoint(request: Request) -> Response:
    enforce(request, "create_endpoint")
    body = (await body_as(request, EndpointRequest)).endpoint
    if not body.service_id or not body.interface or not body.url:
        raise BadRequest("An endpoint needs service_id, interface and url.")
    identity = service(request)
    async with identity.db.session() as session:
        await get_or_404(session, Service, body.service_id, "service")
        region_id = await _endpoint_region(session, body)
        row = Endpoint(
            service_id=body.service_id,
            interface=body.interface,
            url=body.url,
            region_id=region_id,
            enabled=True if body.enabled is None else body.enabled,
        )
        session.add(row)
        await identity.tokens.changed(session)
        result = views.endpoint(request, row)
    await committed(request)
    return json({"endpoint": result}, 201)


async def _endpoint_region(session: AsyncSession, body: EndpointBody) -> str | None:
    """The endpoint's region: ``region_id`` must exist; the legacy ``region`` is created
    when absent, as Keystone keeps v2-style clients working."""
    if body.region_id:
        if await session.get(Region, body.region_id) is None:
            raise BadRequest(f"Region {body.region_id} does not exist.")
        return body.region_id
    if body.region and await session.get(Region, body.region) is None:
        session.add(Region(id=body.region, description="", parent_region_id=None))
        await session.flush()
    return body.region


@routes.get("/v3/endpoints")
async def list_endpoints(request: Request) -> Response:
    enforce(request, "list_endpoints")
    query = filtered(select(Endpoint), Endpoint, request, ("service_id", "interface", "region_id"))
    async with service(request).db.session() as session:
        rows = (
            await session.execute(query.order_by(Endpoint.service_id, Endpoint.interface))
        ).scalars()
        items = [views.endpoint(request, e) for e in rows]
    return json(views.collection(request, "endpoints", items))


@routes.get("/v3/endpoints/{endpoint_id}")
async def get_endpoint(request: Request) -> Response:
    enforce(request, "get_endpoint")
    async with service(request).db.session() as session:
        row = await get_or_404(session, Endpoint, request.path_params["endpoint_id"], "endpoint")
        return json({"endpoint": views.endpoint(request, row)})


@routes.patch("/v3/endpoints/{endpoint_id}")
async def update_endpoint(request: Request) -> Response:
    enforce(request, "update_endpoint")
    body = (await body_as(request, EndpointRequest)).endpoint
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(session, Endpoint, request.path_params["endpoint_id"], "endpoint")
        if body.service_id:
            await get_or_404(session, Service, body.service_id, "service")
        region_id = await _endpoint_region(session, body)
        if region_id:
            row.region_id = region_id
        apply_changes(row, body, ("service_id", "interface", "url", "enabled"))
        await identity.tokens.changed(session)
        result = views.endpoint(request, row)
    await committed(request)
    return json({"endpoint": result})


@routes.delete("/v3/endpoints/{endpoint_id}")
async def delete_endpoint(request: Request) -> Response:
    enforce(request, "delete_endpoint")
    identity = service(request)
    async with identity.db.session() as session:
        row = await get_or_404(session, Endpoint, request.path_params["endpoint_id"], "endpoint")
        await session.delete(row)
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()
