"""``/v2.0/routers``: external gateways, interfaces on subnets or ports, static routes."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import BadRequest, Conflict
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network.api.common import (
    body_of,
    caller,
    enforce,
    fetch,
    list_response,
    not_found,
    one,
    quota_held,
    scoped,
    service,
)
from onestack.network.api.networks import visible
from onestack.network.api.ports import create_service_port, delete_service_port, fixed_ips_of
from onestack.network.models import IPAllocation, Network, Port, Router, Subnet
from onestack.network.views import timestamps

routes = RouteTable()

GATEWAY = "network:router_gateway"
INTERFACE = "network:router_interface"
COLUMNS = {
    "id": "id",
    "name": "name",
    "description": "description",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "admin_state_up": "admin_state_up",
    "status": "status",
    "revision_number": "revision_number",
}


async def router_ports(session: AsyncSession, router_id: str, owner: str) -> list[Port]:
    rows = await session.execute(
        select(Port).where(Port.device_id == router_id, Port.device_owner == owner)
    )
    return list(rows.scalars())


async def router_view(session: AsyncSession, row: Router) -> dict[str, Any]:
    gateway = None
    if row.gateway_network_id:
        ports = await router_ports(session, row.id, GATEWAY)
        fixed = await fixed_ips_of(session, [p.id for p in ports])
        gateway = {
            "network_id": row.gateway_network_id,
            "enable_snat": row.enable_snat,
            "external_fixed_ips": [ip for p in ports for ip in fixed.get(p.id, [])],
        }
    return {
        **timestamps(row),
        "admin_state_up": row.admin_state_up,
        "status": row.status,
        "external_gateway_info": gateway,
        "routes": list(row.routes or []),
        "distributed": False,
        "ha": False,
        "flavor_id": None,
        "availability_zone_hints": [],
        "availability_zones": ["nova"],
    }


async def _connected(
    session: AsyncSession, router: Router
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets the router has an interface (or its gateway) on."""
    ports = await router_ports(session, router.id, INTERFACE) + await router_ports(
        session, router.id, GATEWAY
    )
    rows = await session.execute(
        select(Subnet.cidr)
        .join(IPAllocation, IPAllocation.subnet_id == Subnet.id)
        .where(IPAllocation.port_id.in_([p.id for p in ports]))
    )
    return [ipaddress.ip_network(cidr) for cidr in rows.scalars()]


def _static_routes(value: Any, connected: list[Any]) -> list[dict[str, str]]:
    if value is None:
        return []  # Neutron reads null as "no routes"
    if not isinstance(value, list):
        raise BadRequest("Invalid input for routes: a list is expected.")
    result = []
    for route in value:
        if not isinstance(route, dict) or "destination" not in route or "nexthop" not in route:
            raise BadRequest("Each route needs destination and nexthop.")
        try:
            ipaddress.ip_network(route["destination"])
            nexthop = ipaddress.ip_address(route["nexthop"])
        except ValueError:
            raise BadRequest(f"Invalid route {route}.", type="InvalidRoutes") from None
        if not any(nexthop in network for network in connected):
            raise BadRequest(
                f"Invalid format for routes: {route}, the nexthop is not connected with router",
                type="InvalidRoutes",
            )
        result.append({"destination": route["destination"], "nexthop": route["nexthop"]})
    return result


async def _set_gateway(request: Request, router: Router, info: dict[str, Any] | None) -> None:
    """Replace the router's gateway port by one on ``info``'s external network (or none)."""
    async with service(request).db.session() as session:
        old = [p.id for p in await router_ports(session, router.id, GATEWAY)]
    for port_id in old:
        await delete_service_port(request, port_id)
    router.gateway_network_id = None
    if not info:
        return
    if not isinstance(info, dict) or "network_id" not in info:
        raise BadRequest("external_gateway_info needs a network_id.")
    async with service(request).db.session() as session:
        network = await fetch(
            request, session, Network, str(info["network_id"]), "network", visible(request)
        )
    if not network.external:
        raise BadRequest(
            f"Network {network.id} is not a valid external network.", type="BadRequest"
        )
    wanted = info.get("external_fixed_ips") or None
    await create_service_port(request, network, "", GATEWAY, router.id, wanted)
    router.gateway_network_id = network.id
    if "enable_snat" in info:
        if not isinstance(info["enable_snat"], bool):
            raise BadRequest("enable_snat must be a boolean.")
        router.enable_snat = info["enable_snat"]


@routes.post("/v2.0/routers")
async def create_router(request: Request) -> Response:
    body = body_of(await json_body(request), "router")
    context = caller(request)
    project_id = str(body.get("project_id") or body.get("tenant_id") or context.project_id)
    enforce(request, "create", {"project_id": project_id})
    network_service = service(request)
    async with quota_held(request, project_id, "router"):
        row = Router(
            project_id=project_id,
            name=str(body.get("name", "")),
            description=str(body.get("description", "")),
            admin_state_up=bool(body.get("admin_state_up", True)),
            status="ACTIVE",
            enable_snat=True,
            routes=[],
            tags=[],
            revision_number=1,
        )
        async with network_service.db.session() as session:
            session.add(row)
        if body.get("external_gateway_info"):
            try:
                await _set_gateway(request, row, body["external_gateway_info"])
            except BaseException:
                async with network_service.db.session() as session:
                    await session.delete(await session.get(Router, row.id))
                raise
        async with network_service.db.session() as session:
            await session.merge(row)
            result = await router_view(session, row)
    return one("router", result, request, 201)


@routes.get("/v2.0/routers")
async def list_routers(request: Request) -> Response:
    enforce(request, "read")
    query = scoped(select(Router), Router, request)
    async with service(request).db.session() as session:
        views = {
            r.id: await router_view(session, r) for r in (await session.execute(query)).scalars()
        }
    return await list_response(
        request, query, Router, "routers", lambda row: views[row.id], COLUMNS
    )


@routes.get("/v2.0/routers/{router_id}")
async def show_router(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        row = await fetch(request, session, Router, request.path_params["router_id"], "router")
        return one("router", await router_view(session, row), request)


@routes.put("/v2.0/routers/{router_id}")
async def update_router(request: Request) -> Response:
    body = body_of(await json_body(request), "router")
    network_service = service(request)
    async with network_service.db.session() as session:
        row = await fetch(request, session, Router, request.path_params["router_id"], "router")
        enforce(request, "update", {"project_id": row.project_id})
    if "external_gateway_info" in body:
        await _set_gateway(request, row, body["external_gateway_info"])
    async with network_service.db.session() as session:
        if "routes" in body:
            row.routes = _static_routes(body["routes"], await _connected(session, row))
        for name in ("name", "description"):
            if name in body:
                setattr(row, name, str(body[name]))
        if "admin_state_up" in body:
            row.admin_state_up = bool(body["admin_state_up"])
        row.revision_number += 1
        row = await session.merge(row)
        await session.flush()
        return one("router", await router_view(session, row), request)


@routes.delete("/v2.0/routers/{router_id}")
async def delete_router(request: Request) -> Response:
    network_service = service(request)
    async with network_service.db.session() as session:
        row = await fetch(request, session, Router, request.path_params["router_id"], "router")
        enforce(request, "delete", {"project_id": row.project_id})
        if await router_ports(session, row.id, INTERFACE):
            raise Conflict(f"Router {row.id} still has ports", type="RouterInUse")
        gateway = [p.id for p in await router_ports(session, row.id, GATEWAY)]
        project_id = row.project_id
    for port_id in gateway:
        await delete_service_port(request, port_id)
    async with network_service.db.session() as session:
        await session.delete(await session.get(Router, row.id))
    await network_service.quotas.release(project_id, {"router": 1})
    return Response(status_code=204)


def _interface_info(router: Router, port: Port, subnet_ids: list[str]) -> dict[str, Any]:
    return {
        "id": router.id,
        "tenant_id": router.project_id,
        "project_id": router.project_id,
        "port_id": port.id,
        "network_id": port.network_id,
        "subnet_id": subnet_ids[0] if subnet_ids else None,
        "subnet_ids": subnet_ids,
    }


@routes.put("/v2.0/routers/{router_id}/add_router_interface")
async def add_interface(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or bool(body.get("subnet_id")) == bool(body.get("port_id")):
        raise BadRequest("Either subnet_id or port_id must be specified.")
    network_service = service(request)
    async with network_service.db.session() as session:
        router = await fetch(request, session, Router, request.path_params["router_id"], "router")
        enforce(request, "update", {"project_id": router.project_id})
        connected = await _connected(session, router)
        network: Network | None = None
        if body.get("subnet_id"):
            subnet = await fetch(request, session, Subnet, str(body["subnet_id"]), "subnet")
            if not subnet.gateway_ip:
                raise BadRequest(
                    f"Bad router request: Subnet {subnet.id} does not have a gateway IP.",
                    type="BadRequest",
                )
            network = await session.get(Network, subnet.network_id)
            port_id = None
        else:
            port = await fetch(request, session, Port, str(body["port_id"]), "port")
            if port.device_id:
                raise Conflict(f"Port {port.id} is in use by {port.device_id}.", type="PortInUse")
            port_id = port.id
            rows = await session.execute(
                select(Subnet)
                .join(IPAllocation, IPAllocation.subnet_id == Subnet.id)
                .where(IPAllocation.port_id == port.id)
            )
            subnets = list(rows.scalars())
            if not subnets:
                raise BadRequest(f"Bad router request: Router port {port.id} has no IP address.")
            subnet = subnets[0]
        new = ipaddress.ip_network(subnet.cidr)
        for network_cidr in connected:
            if network_cidr.version == new.version and network_cidr.overlaps(new):
                raise BadRequest(
                    f"Bad router request: Cidr {new} of subnet {subnet.id} overlaps with cidr "
                    f"{network_cidr} of a subnet already on router {router.id}.",
                    type="BadRequest",
                )
        if port_id is None and subnet.ip_version == 6:
            port_id = await _shared_ipv6_leg(session, router, subnet)
            if port_id is not None:
                port = await session.get(Port, port_id)
                assert port is not None
                return JSONResponse(_interface_info(router, port, [subnet.id]))
    if port_id is None:
        assert network is not None
        wanted = [{"subnet_id": subnet.id, "ip_address": str(subnet.gateway_ip)}]
        created = await create_service_port(
            request, network, router.project_id, INTERFACE, router.id, wanted
        )
        port_id = created["id"]
    else:
        async with network_service.db.session() as session:
            port = await session.get(Port, port_id)
            assert port is not None
            port.device_id, port.device_owner = router.id, INTERFACE
    async with network_service.db.session() as session:
        port = await session.get(Port, port_id)
        assert port is not None
        return JSONResponse(_interface_info(router, port, [subnet.id]))


@routes.put("/v2.0/routers/{router_id}/remove_router_interface")
async def remove_interface(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or not (body.get("subnet_id") or body.get("port_id")):
        raise BadRequest("Either subnet_id or port_id must be specified.")
    network_service = service(request)
    async with network_service.db.session() as session:
        router = await fetch(request, session, Router, request.path_params["router_id"], "router")
        enforce(request, "update", {"project_id": router.project_id})
        ports = await router_ports(session, router.id, INTERFACE)
        fixed = await fixed_ips_of(session, [p.id for p in ports])
        match = None
        for port in ports:
            subnets = [ip["subnet_id"] for ip in fixed.get(port.id, [])]
            if port.id == body.get("port_id") or body.get("subnet_id") in subnets:
                match = (port, subnets)
                break
        if match is None:
            ident = body.get("subnet_id") or body.get("port_id")
            raise not_found("router_interface", f"for {ident} on router {router.id}")
        port, subnets = match
        if body.get("subnet_id") and not body.get("port_id") and len(subnets) > 1:
            # An IPv6 leg shared by several subnets loses only this one.
            await session.execute(
                delete(IPAllocation).where(
                    IPAllocation.port_id == port.id, IPAllocation.subnet_id == body["subnet_id"]
                )
            )
            return JSONResponse(_interface_info(router, port, [body["subnet_id"]]))
        info = _interface_info(router, port, subnets)
    await delete_service_port(request, port.id)
    return JSONResponse(info)


async def _shared_ipv6_leg(session: AsyncSession, router: Router, subnet: Subnet) -> str | None:
    """As Neutron: an IPv6 subnet joins the router's leg already holding IPv6 on its network.

    The leg gets the subnet's gateway address; its id, or None when there is no such leg.
    """
    legs = await router_ports(session, router.id, INTERFACE)
    legs = [p for p in legs if p.network_id == subnet.network_id]
    held = await fixed_ips_of(session, [p.id for p in legs])
    for leg in legs:
        if any(ipaddress.ip_address(ip["ip_address"]).version == 6 for ip in held.get(leg.id, [])):
            taken = await session.get(IPAllocation, (subnet.id, str(subnet.gateway_ip)))
            if taken is not None:
                raise Conflict(
                    f"IP address {subnet.gateway_ip} already allocated in subnet {subnet.id}.",
                    type="IpAddressAlreadyAllocated",
                )
            session.add(
                IPAllocation(
                    subnet_id=subnet.id,
                    ip_address=str(subnet.gateway_ip),
                    port_id=leg.id,
                    network_id=subnet.network_id,
                )
            )
            return str(leg.id)
    return None
