"""``/v2.0/subnets``."""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import retry_on_deadlock
from onestack.network import ipam
from onestack.network.api.bulk import bulk_create, is_bulk
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
from onestack.network.api.ports import ROUTER_INTERFACE
from onestack.network.api.subnetpools import integer_attribute, lock_pool, visible_pools
from onestack.network.models import IPAllocation, Network, Port, Subnet, SubnetPool
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


def _check_ipv6_modes(body: dict[str, Any], network: ipam.IPNetwork) -> None:
    """Neutron's rules for ``ipv6_ra_mode`` and ``ipv6_address_mode`` together."""
    ra_mode, address_mode = body.get("ipv6_ra_mode"), body.get("ipv6_address_mode")
    if ra_mode and address_mode and ra_mode != address_mode:
        raise BadRequest(
            f"Invalid input for operation: ipv6_ra_mode set to '{ra_mode}' with "
            f"ipv6_address_mode set to '{address_mode}' is not valid. If both attributes "
            "are set, they must be the same value.",
            type="InvalidInput",
        )
    if (ra_mode or address_mode) and body.get("enable_dhcp") is False:
        raise BadRequest(
            "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set "
            "when enable_dhcp is set to False.",
            type="InvalidInput",
        )
    if ipam.auto_address(address_mode) and network.prefixlen != 64:
        raise BadRequest(
            f"Invalid input for operation: Invalid CIDR {network} for IPv6 address mode. "
            "OpenStack uses the EUI-64 address format, which requires the prefix to be /64.",
            type="InvalidInput",
        )


def _addressing(
    body: dict[str, Any], network: ipam.IPNetwork, ip_version: int
) -> tuple[ipam.IPAddress | None, list[dict[str, str]]]:
    """The subnet's gateway and allocation pools in ``network``, checked with its IPv6 modes."""
    gateway: ipam.IPAddress | None
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
    _check_ipv6_modes(body, network)
    return gateway, pools


@routes.post("/v2.0/subnets")
async def create_subnet(request: Request) -> Response:
    data = await json_body(request)
    if is_bulk(data, "subnets"):
        return await bulk_create(
            request, data["subnets"], "subnet", create_subnet, delete_subnet, "subnet_id"
        )
    body = body_of(data, "subnet")
    network_service = service(request)
    if "network_id" not in body:
        raise BadRequest("Invalid input for operation: network_id is required.")
    from_pool = body.get("subnetpool_id") is not None or body.get("use_default_subnetpool")
    if "cidr" not in body and not from_pool:
        raise BadRequest(
            "Invalid input for operation: a cidr must be specified in the absence of a "
            "subnet pool.",
            type="BadRequest",
        )
    ip_version = body.get("ip_version", 4)
    if ip_version not in (4, 6):
        raise BadRequest(f"Invalid input for ip_version: {ip_version} is not 4 or 6.")
    requested = ipam.parse_cidr(str(body["cidr"]), ip_version) if "cidr" in body else None
    if requested is not None:
        _addressing(body, requested, ip_version)  # bad input fails before any lock is taken
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
        project_id = (
            parent.project_id
            if not is_admin(request)
            else body.get("project_id", caller(request).project_id)
        )
    enforce(request, "create", {"project_id": project_id})

    async def insert() -> dict[str, Any]:
        async with network_service.db.session() as session:
            pool = await _locked_pool(request, session, body, ip_version) if from_pool else None
            network = await _subnet_range(
                session, body, parent.id, pool, requested, str(project_id)
            )
            gateway, pools = _addressing(body, network, ip_version)
            row = Subnet(
                network_id=parent.id,
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
                subnetpool_id=pool.id if pool else None,
            )
            session.add(row)
            await session.flush()
            if ip_version == 6 and ipam.auto_address(row.ipv6_address_mode):
                await _address_existing_ports(session, row)
            return subnet_view(row)

    async with quota_held(request, project_id or "", "subnet"):
        result = await retry_on_deadlock(insert)
    return one("subnet", result, request, 201)


async def _locked_pool(
    request: Request, session: AsyncSession, body: dict[str, Any], ip_version: int
) -> SubnetPool:
    """The pool to allocate from, locked for this transaction (``lock_pool``), so that two
    allocations never see the same free prefix."""
    pool_id = body.get("subnetpool_id")
    if pool_id is None:
        pool_id = await session.scalar(
            scoped(select(SubnetPool.id), SubnetPool, request, visible_pools()).where(
                SubnetPool.is_default.is_(True), SubnetPool.ip_version == ip_version
            )
        )
        if pool_id is None:
            raise BadRequest(f"No default subnetpool found for IPv{ip_version}.", type="BadRequest")
    await lock_pool(session, str(pool_id))
    pool: SubnetPool = await fetch(
        request, session, SubnetPool, str(pool_id), "subnet_pool", visible_pools()
    )
    if pool.ip_version != ip_version:
        raise BadRequest(
            f"Invalid input: subnet pool {pool.id} is IPv{pool.ip_version}, the subnet "
            f"IPv{ip_version}.",
            type="InvalidInput",
        )
    return pool


async def _subnet_range(
    session: AsyncSession,
    body: dict[str, Any],
    network_id: str,
    pool: SubnetPool | None,
    requested: ipam.IPNetwork | None,
    project_id: str,
) -> ipam.IPNetwork:
    """The subnet's CIDR: the requested one, or the first free one of the pool; it overlaps
    neither the network's other subnets nor the pool's."""
    siblings = list(
        (await session.execute(select(Subnet.cidr).where(Subnet.network_id == network_id)))
        .scalars()
        .all()
    )
    if pool is not None:
        carved = (
            await session.execute(
                select(Subnet.cidr, Subnet.project_id).where(Subnet.subnetpool_id == pool.id)
            )
        ).all()
        prefixlen = (
            requested.prefixlen
            if requested
            else integer_attribute(body, "prefixlen", pool.default_prefixlen)
        )
        prefixlen = _check_prefixlen(pool, prefixlen)
        if requested is None:
            requested = ipam.first_free_prefix(
                pool.prefixes, prefixlen, [c for c, _ in carved] + siblings
            )
            if requested is None:
                raise ipam.SubnetAllocationError(
                    f"Unable to allocate subnet with prefix length {prefixlen}, no free prefix "
                    f"of that size left in subnet pool {pool.id}",
                    type="PrefixPoolExhausted",
                )
        else:
            ipam.check_in_pool(requested, pool.prefixes)
            if any(ipaddress.ip_network(c).overlaps(requested) for c, _ in carved):
                raise ipam.SubnetAllocationError(
                    f"Cannot allocate requested subnet {requested} from the available set of "
                    f"prefixes of subnet pool {pool.id}: it overlaps a subnet of the pool"
                )
        _check_pool_quota(pool, requested, [c for c, owner in carved if owner == project_id])
    if requested is None:
        raise BadRequest("Invalid input for operation: cidr is required.")
    for cidr in siblings:
        other = ipaddress.ip_network(cidr)
        if other.version == requested.version and other.overlaps(requested):
            raise BadRequest(
                f"Invalid input for operation: Requested subnet with cidr: {requested} for "
                f"network: {network_id} overlaps with another subnet.",
                type="InvalidInput",
            )
    return requested


def _check_prefixlen(pool: SubnetPool, prefixlen: int | None) -> int:
    """``prefixlen`` when within the pool's bounds; Neutron's 400 otherwise."""
    if prefixlen is None or prefixlen < pool.min_prefixlen:
        raise BadRequest(
            f"Unsupported minimum subnet prefix length: {prefixlen}, minimum allowed prefix "
            f"is {pool.min_prefixlen}.",
            type="MinPrefixSubnetAllocationError",
        )
    if prefixlen > pool.max_prefixlen:
        raise BadRequest(
            f"Unsupported maximum subnet prefix length: {prefixlen}, maximum allowed prefix "
            f"is {pool.max_prefixlen}.",
            type="MaxPrefixSubnetAllocationError",
        )
    return prefixlen


def _check_pool_quota(pool: SubnetPool, network: ipam.IPNetwork, owned: list[str]) -> None:
    """A pool's ``default_quota`` caps a project's addresses (IPv6: /64s) taken from it."""
    if pool.default_quota is None:
        return
    unit = 64 if pool.ip_version == 6 else 0

    def size(cidr: ipam.IPNetwork) -> int:
        return max(cidr.num_addresses >> unit, 1)

    held = sum(size(ipaddress.ip_network(c)) for c in owned)
    if held + size(network) > pool.default_quota:
        raise ipam.SubnetAllocationError(
            f"Unable to allocate {network}: the project would exceed the subnet pool's quota "
            f"of {pool.default_quota} (it holds {held})",
            type="SubnetPoolQuotaExceeded",
        )


async def _address_existing_ports(session: AsyncSession, subnet: Subnet) -> None:
    """As Neutron: the network's ports (but router interfaces) get their EUI-64 address."""
    ports = await session.execute(
        select(Port.id, Port.mac_address).where(
            Port.network_id == subnet.network_id, Port.device_owner != ROUTER_INTERFACE
        )
    )
    for port_id, mac in ports:
        session.add(
            IPAllocation(
                subnet_id=subnet.id,
                ip_address=ipam.eui64(subnet.cidr, mac),
                port_id=port_id,
                network_id=subnet.network_id,
            )
        )


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
        # As Neutron: EUI-64 addresses go with their subnet; only a router interface holds it.
        automatic = row.ip_version == 6 and ipam.auto_address(row.ipv6_address_mode)
        releasable = (
            Port.device_owner != ROUTER_INTERFACE
            if automatic
            else Port.device_owner.startswith("network:dhcp")
        )
        in_use = await session.scalar(
            select(func.count())
            .select_from(IPAllocation)
            .join(Port, Port.id == IPAllocation.port_id)
            .where(IPAllocation.subnet_id == row.id, ~releasable)
        )
        if in_use:
            raise Conflict(
                f"Unable to complete operation on subnet {row.id}: One or more ports have an IP "
                "allocation from this subnet.",
                type="SubnetInUse",
            )
        project_id = row.project_id
        await session.execute(delete(IPAllocation).where(IPAllocation.subnet_id == row.id))
        await session.delete(row)
    await network_service.quotas.release(project_id, {"subnet": 1})
    return Response(status_code=204)
