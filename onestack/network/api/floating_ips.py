"""``/v2.0/floatingips``: addresses of an external network, associated to ports behind a router."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network.api.common import (
    body_of,
    caller,
    enforce,
    fetch,
    list_response,
    one,
    quota_held,
    scoped,
    service,
)
from onestack.network.api.networks import visible
from onestack.network.api.ports import create_service_port, delete_service_port, fixed_ips_of
from onestack.network.api.routers import GATEWAY, INTERFACE
from onestack.network.models import FloatingIP, IPAllocation, Network, Port
from onestack.network.views import iso_time

routes = RouteTable()

COLUMNS = {
    "id": "id",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "floating_network_id": "floating_network_id",
    "floating_ip_address": "floating_ip_address",
    "port_id": "port_id",
    "fixed_ip_address": "fixed_ip_address",
    "router_id": "router_id",
    "status": "status",
    "description": "description",
}


def view(row: FloatingIP) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.project_id,
        "project_id": row.project_id,
        "floating_network_id": row.floating_network_id,
        "floating_ip_address": row.floating_ip_address,
        "port_id": row.port_id,
        "fixed_ip_address": row.fixed_ip_address,
        "router_id": row.router_id,
        "status": row.status,
        "description": row.description,
        "tags": list(row.tags or []),
        "port_forwardings": [],
        "qos_policy_id": None,
        "created_at": iso_time(row.created_at),
        "updated_at": iso_time(row.updated_at),
        "revision_number": row.revision_number,
    }


async def _router_for(session: AsyncSession, external_id: str, subnet_id: str) -> str | None:
    """The router joining ``subnet_id`` to the external network, if any."""
    interfaces = await session.execute(
        select(Port.device_id)
        .join(IPAllocation, IPAllocation.port_id == Port.id)
        .where(Port.device_owner == INTERFACE, IPAllocation.subnet_id == subnet_id)
    )
    for router_id in interfaces.scalars():
        gateway = await session.scalar(
            select(Port.id).where(
                Port.device_id == router_id,
                Port.device_owner == GATEWAY,
                Port.network_id == external_id,
            )
        )
        if gateway:
            return str(router_id)
    return None


async def _associate(
    request: Request, session: AsyncSession, row: FloatingIP, body: dict[str, Any]
) -> None:
    """Point the floating IP at ``body['port_id']`` (or at nothing), checking reachability."""
    port_id = body.get("port_id")
    if port_id is None:
        row.port_id = row.fixed_ip_address = row.router_id = None
        row.status = "DOWN"
        return
    port = await fetch(request, session, Port, str(port_id), "port")
    if port.project_id != row.project_id:
        raise NotFound(f"Port {port_id} could not be found.", type="PortNotFound")
    fixed = (await fixed_ips_of(session, [port.id])).get(port.id, [])
    wanted = body.get("fixed_ip_address")
    candidates = [ip for ip in fixed if ipaddress.ip_address(ip["ip_address"]).version == 4]
    if wanted is not None:
        candidates = [ip for ip in candidates if ip["ip_address"] == wanted]
    if not candidates:
        raise BadRequest(
            f"Port {port.id} has no IPv4 address {wanted or ''} to associate.".replace("  ", " ")
        )
    chosen = candidates[0]
    router_id = await _router_for(session, row.floating_network_id, chosen["subnet_id"])
    if router_id is None:
        raise NotFound(
            f"External network {row.floating_network_id} is not reachable from subnet "
            f"{chosen['subnet_id']}. Therefore, cannot associate Port {port.id} with a "
            "Floating IP.",
            type="ExternalGatewayForFloatingIPNotFound",
        )
    taken = await session.scalar(
        select(FloatingIP.id).where(
            FloatingIP.port_id == port.id,
            FloatingIP.fixed_ip_address == chosen["ip_address"],
            FloatingIP.id != row.id,
        )
    )
    if taken:
        raise Conflict(
            f"Cannot associate floating IP {row.floating_ip_address} with port {port.id} using "
            f"fixed IP {chosen['ip_address']}, as that fixed IP already has a floating IP.",
            type="FloatingIPPortAlreadyAssociated",
        )
    row.port_id, row.fixed_ip_address, row.router_id = port.id, chosen["ip_address"], router_id
    row.status = "ACTIVE"


@routes.post("/v2.0/floatingips")
async def create_floating_ip(request: Request) -> Response:
    body = body_of(await json_body(request), "floatingip")
    if "floating_network_id" not in body:
        raise BadRequest("Invalid input for operation: floating_network_id is required.")
    context = caller(request)
    project_id = str(body.get("project_id") or body.get("tenant_id") or context.project_id)
    enforce(request, "create", {"project_id": project_id})
    network_service = service(request)
    async with network_service.db.session() as session:
        network = await fetch(
            request, session, Network, str(body["floating_network_id"]), "network", visible(request)
        )
    if not network.external:
        raise BadRequest(f"Network {network.id} is not a valid external network.")
    wanted = None
    if body.get("floating_ip_address"):
        wanted = [{"ip_address": str(body["floating_ip_address"])}]
        if body.get("subnet_id"):
            wanted[0]["subnet_id"] = str(body["subnet_id"])
    elif body.get("subnet_id"):
        wanted = [{"subnet_id": str(body["subnet_id"])}]
    async with quota_held(request, project_id, "floatingip"):
        port = await create_service_port(request, network, "", "network:floatingip", "", wanted)
        try:
            async with network_service.db.session() as session:
                row = FloatingIP(
                    project_id=project_id,
                    floating_network_id=network.id,
                    floating_port_id=port["id"],
                    floating_ip_address=port["fixed_ips"][0]["ip_address"],
                    description=str(body.get("description", "")),
                    status="DOWN",
                    tags=[],
                    revision_number=1,
                )
                session.add(row)
                await session.flush()
                await _associate(request, session, row, body)
                # The address's port is owned by the floating IP itself.
                holder = await session.get(Port, port["id"])
                assert holder is not None
                holder.device_id = row.id
                result = view(row)
        except BaseException:
            await delete_service_port(request, port["id"])
            raise
    return one("floatingip", result, request, 201)


@routes.get("/v2.0/floatingips")
async def list_floating_ips(request: Request) -> Response:
    enforce(request, "read")
    query = scoped(select(FloatingIP), FloatingIP, request)
    return await list_response(request, query, FloatingIP, "floatingips", view, COLUMNS)


@routes.get("/v2.0/floatingips/{fip_id}")
async def show_floating_ip(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        row = await fetch(
            request, session, FloatingIP, request.path_params["fip_id"], "floating_ip"
        )
        return one("floatingip", view(row), request)


@routes.put("/v2.0/floatingips/{fip_id}")
async def update_floating_ip(request: Request) -> Response:
    body = body_of(await json_body(request), "floatingip")
    async with service(request).db.session() as session:
        row = await fetch(
            request, session, FloatingIP, request.path_params["fip_id"], "floating_ip"
        )
        enforce(request, "update", {"project_id": row.project_id})
        if "port_id" in body:
            await _associate(request, session, row, body)
        if "description" in body:
            row.description = str(body["description"])
        row.revision_number += 1
        await session.flush()
        return one("floatingip", view(row), request)


@routes.delete("/v2.0/floatingips/{fip_id}")
async def delete_floating_ip(request: Request) -> Response:
    network_service = service(request)
    async with network_service.db.session() as session:
        row = await fetch(
            request, session, FloatingIP, request.path_params["fip_id"], "floating_ip"
        )
        enforce(request, "delete", {"project_id": row.project_id})
        project_id, port_id = row.project_id, row.floating_port_id
        await session.delete(row)
    await delete_service_port(request, port_id)
    await network_service.quotas.release(project_id, {"floatingip": 1})
    return Response(status_code=204)
