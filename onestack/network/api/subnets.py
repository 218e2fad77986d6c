"""``/v2.0/subnets``."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network import ipam
from onestack.network.api.common import (
    body_of,
    caller,
    enforce,
    fetch,
    is_admin,
    list_response,
    one,
    quota_held,
    scoped,
    service,
)
from onestack.network.api.networks import visible
from onestack.network.models import IPAllocation, Network, Port, Subnet
from onestack.network.views import subnet_view

routes = RouteTable()

COLUMNS = {
    "id": "id",
    "name": "name",
    "description": "description",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "network_id": "network_id",
    "ip_version": "ip_version",
    "cidr": "cidr",
    "gateway_ip": "gateway_ip",
    "enable_dhcp": "enable_dhcp",
    "ipv6_ra_mode": "ipv6_ra_mode",
    "ipv6_address_mode": "ipv6_address_mode",
    "created_at": "created_at",
    "revision_number": "revision_number",
}
IPV6_MODES = (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless")


def _strings(body: dict[str, Any], name: str) -> list[str]:
    values = body.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadRequest(f"Invalid input for {name}: a list of strings is expected.")
    return values


def _routes(body: dict[str, Any]) -> list[dict[str, str]]:
    routes_in = body.get("host_routes", [])
    if not isinstance(routes_in, list):
        raise BadRequest("Invalid input for host_routes.")
    result = []
    for route in routes_in:
        if not isinstance(route, dict) or "destination" not in route or "nexthop" not in route:
            raise BadRequest("Each host route needs destination and nexthop.")
        try:
            ipaddress.ip_network(route["destination"])
        except ValueError:
            raise BadRequest(f"Invalid host route destination {route['destination']!r}.") from None
        ipam.parse_address(str(route["nexthop"]), what="host_routes")
        result.append({"destination": route["destination"], "nexthop": route["nexthop"]})
    return result


@routes.post("/v2.0/subnets")
async def create_subnet(request: Request) -> Response:
    body = body_of(await json_body(request), "subnet")
    network_service = service(request)
    if "network_id" not in body:
        raise BadRequest("Invalid input for operation: network_id is required.")
    if "cidr" not in body:
        raise BadRequest(
            "Invalid input for operation: cidr is required (subnet pools are not available)."
        )
    ip_version = body.get("ip_version", 4)
    if ip_version not in (4, 6):
        raise BadRequest(f"Invalid input for ip_version: {ip_version} is not 4 or 6.")
    network = ipam.parse_cidr(str(body["cidr"]), ip_version)
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    if "gateway_ip" in body and body["gateway_ip"] is None:
        gateway = None
    elif "gateway_ip" in body:
        gateway = ipam.parse_address(str(body["gateway_ip"]), network, "gateway_ip")
        if gateway in (network.network_address, network.broadcast_address) and ip_version == 4:
            raise BadRequest(f"Gateway is not valid on subnet {network}.")
    else:
        gateway = network.network_address + 1
    pools = (
        ipam.check_pools(body["allocation_pools"], network, gateway)
        if body.get("allocation_pools")
        else ipam.default_pools(network, gateway)
    )
    for mode in ("ipv6_ra_mode", "ipv6_address_mode"):
        if body.get(mode) not in IPV6_MODES or (body.get(mode) and ip_version == 4):
            raise BadRequest(f"Invalid input for {mode}.")
    if "enable_dhcp" in body and not isinstance(body["enable_dhcp"], bool):
        raise BadRequest("Invalid input for enable_dhcp: a boolean is expected.")
    async with network_service.db.session() as session:
        parent = await fetch(
            request, session, Network, str(body["network_id"]), "network", visible(request)
        )
        if parent.project_id != caller(request).project_id and not is_admin(request):
            raise Forbidden(
                "Only the network's owner can add subnets to it.", type="PolicyNotAuthorized"
            )
        siblings = (
            await session.execute(select(Subnet.cidr).where(Subnet.network_id == parent.id))
        ).scalars()
        for cidr in siblings:
            other = ipaddress.ip_network(cidr)
            if other.version == network.version and other.overlaps(network):
                raise BadRequest(
                    f"Invalid input for operation: Requested subnet with cidr: {network} for "
                    f"network: {parent.id} overlaps with another subnet.",
                    type="InvalidInput",
                )
        project_id = (
            parent.project_id
            if not is_admin(request)
            else body.get("project_id", caller(request).project_id)
        )
    enforce(request, "create", {"project_id": project_id})
    async with (
        quota_held(request, project_id or "", "subnet"),
        network_service.db.session() as session,
    ):
        row = Subnet(
            network_id=body["network_id"],
            project_id=project_id,
            name=str(body.get("name", "")),
            description=str(body.get("description", "")),
            tags=[],
            revision_number=1,
            ip_version=ip_version,
            cidr=str(network),
            gateway_ip=str(gateway) if gateway is not None else None,
            enable_dhcp=body.get("enable_dhcp", True),
            allocation_pools=pools,
            dns_nameservers=_strings(body, "dns_nameservers"),
            host_routes=_routes(body),
            ipv6_ra_mode=body.get("ipv6_ra_mode"),
            ipv6_address_mode=body.get("ipv6_address_mode"),
        )
        session.add(row)
        await session.flush()
        result = subnet_view(row)
    return one("subnet", result, request, 201)


def _visible_subnets(request: Request) -> Any:
    return Subnet.network_id.in_(
        select(Network.id).where(Network.shared.is_(True) | Network.external.is_(True))
    )


@routes.get("/v2.0/subnets")
async def list_subnets(request: Request) -> Response:
    enforce(request, "read")
    query = scoped(select(Subnet), Subnet, request, _visible_subnets(request))
    return await list_response(request, query, Subnet, "subnets", subnet_view, COLUMNS)


@routes.get("/v2.0/subnets/{subnet_id}")
async def show_subnet(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        row = await fetch(
            request,
            session,
            Subnet,
            request.path_params["subnet_id"],
            "subnet",
            _visible_subnets(request),
        )
        return one("subnet", subnet_view(row), request)


@routes.put("/v2.0/subnets/{subnet_id}")
async def update_subnet(request: Request) -> Response:
    body = body_of(await json_body(request), "subnet")
    for frozen in ("cidr", "ip_version", "network_id", "allocation_pools"):
        if frozen in body:
            raise BadRequest(f"Cannot update read-only attribute {frozen}.")
    async with service(request).db.session() as session:
        row = await fetch(request, session, Subnet, request.path_params["subnet_id"], "subnet")
        enforce(request, "update", {"project_id": row.project_id})
        network = ipaddress.ip_network(row.cidr)
        for name in ("name", "description"):
            if name in body:
                setattr(row, name, str(body[name]))
        if "enable_dhcp" in body:
            row.enable_dhcp = bool(body["enable_dhcp"])
        if "dns_nameservers" in body:
            row.dns_nameservers = _strings(body, "dns_nameservers")
        if "host_routes" in body:
            row.host_routes = _routes(body)
        if "gateway_ip" in body:
            gateway = body["gateway_ip"]
            if gateway is not None:
                address = ipam.parse_address(str(gateway), network, "gateway_ip")
                ipam.check_pools(row.allocation_pools, network, address)
            row.gateway_ip = gateway
        row.revision_number += 1
        await session.flush()
        return one("subnet", subnet_view(row), request)


@routes.delete("/v2.0/subnets/{subnet_id}")
async def delete_subnet(request: Request) -> Response:
    network_service = service(request)
    async with network_service.db.session() as session:
        row = await fetch(request, session, Subnet, request.path_params["subnet_id"], "subnet")
        enforce(request, "delete", {"project_id": row.project_id})
        in_use = await session.scalar(
            select(func.count())
            .select_from(IPAllocation)
            .join(Port, Port.id == IPAllocation.port_id)
            .where(IPAllocation.subnet_id == row.id, ~Port.device_owner.startswith("network:dhcp"))
        )
        if in_use:
            raise Conflict(
                f"Unable to complete operation on subnet {row.id}: One or more ports have an IP "
                "allocation from this subnet.",
                type="SubnetInUse",
            )
        project_id = row.project_id
        await session.delete(row)
    await network_service.quotas.release(project_id, {"subnet": 1})
    return Response(status_code=204)
