"""``/v2.0/ports``: ports with their fixed IPs, MAC addresses and bindings."""

from __future__ import annotations

import ipaddress
import random
import re
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import APIError, BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network import ipam
from onestack.network.api.bulk import bulk_create, is_bulk
from onestack.network.api.common import (
    body_of,
    caller,
    enforce,
    fetch,
    is_admin,
    list_response,
    not_found,
    one,
    quota_held,
    scoped,
    service,
)
from onestack.network.api.networks import visible
from onestack.network.api.security_groups import check_groups, ensure_default
from onestack.network.models import FloatingIP, IPAllocation, Network, Port, Subnet
from onestack.network.views import port_view

routes = RouteTable()

COLUMNS = {
    "id": "id",
    "name": "name",
    "description": "description",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "network_id": "network_id",
    "mac_address": "mac_address",
    "admin_state_up": "admin_state_up",
    "status": "status",
    "device_id": "device_id",
    "device_owner": "device_owner",
    "binding:host_id": "binding_host_id",
    "binding:vnic_type": "binding_vnic_type",
    "created_at": "created_at",
    "revision_number": "revision_number",
}
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
ATTEMPTS = 20
ADMIN_ONLY = ("binding:host_id", "binding:profile")
ROUTER_INTERFACE = "network:router_interface"
SERVICE_OWNED = ("network:router_interface", "network:router_gateway", "network:floatingip")


class MacAddressInUse(APIError):
    status = 409


def random_mac() -> str:
    """A locally administered unicast MAC in the fa:16:3e range OpenStack uses."""
    return "fa:16:3e:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


async def fixed_ips_of(
    session: AsyncSession, port_ids: list[str]
) -> dict[str, list[dict[str, str]]]:
    rows = await session.execute(
        select(IPAllocation.port_id, IPAllocation.subnet_id, IPAllocation.ip_address).where(
            IPAllocation.port_id.in_(port_ids)
        )
    )
    found: dict[str, list[dict[str, str]]] = {}
    for port_id, subnet_id, address in rows:
        found.setdefault(port_id, []).append({"subnet_id": subnet_id, "ip_address": address})
    return found


def _wanted_ips(body: dict[str, Any]) -> list[dict[str, str]] | None:
    if "fixed_ips" not in body:
        return None
    wanted = body["fixed_ips"]
    if not isinstance(wanted, list) or not all(isinstance(f, dict) for f in wanted):
        raise BadRequest("Invalid input for fixed_ips: a list of objects is expected.")
    for entry in wanted:
        if not ({"subnet_id", "ip_address"} & set(entry)):
            raise BadRequest("Each fixed IP needs a subnet_id or an ip_address.")
    return wanted


async def _allocate(
    session: AsyncSession, network: Network, port: Port, wanted: list[dict[str, str]] | None
) -> None:
    """Give ``port`` its addresses inside the caller's transaction."""
    subnets = list(
        (await session.execute(select(Subnet).where(Subnet.network_id == network.id))).scalars()
    )
    by_id = {s.id: s for s in subnets}
    plan: list[tuple[Subnet, str]] = []
    if wanted is None:
        # As Neutron: one address from the IPv4 subnets and one from the stateful IPv6
        # ones (each the first with room), and the EUI-64 address in every SLAAC subnet.
        v4 = [s for s in subnets if s.ip_version == 4]
        v6 = [s for s in subnets if s.ip_version == 6 and not _automatic(s)]
        for group in (v4, v6):
            for candidate in group:
                address = await _free_address(session, candidate)
                if address is not None:
                    plan.append((candidate, address))
                    break
            else:
                if group:
                    raise ipam.IpAddressGenerationFailure(network.id)
        plan += [(s, ipam.eui64(s.cidr, port.mac_address)) for s in subnets if _automatic(s)]
    else:
        for entry in wanted:
            subnet = by_id.get(entry.get("subnet_id", "")) if "subnet_id" in entry else None
            if "subnet_id" in entry and subnet is None:
                raise not_found("subnet", entry["subnet_id"])
            address = entry.get("ip_address")
            if subnet is None and address is not None:
                parsed = ipam.parse_address(str(address))
                subnet = next((s for s in subnets if parsed in ipaddress.ip_network(s.cidr)), None)
                if subnet is None:
                    raise BadRequest(
                        f"IP address {address} is not in any subnet of network {network.id}."
                    )
            assert subnet is not None
            if address is not None:
                parsed = ipam.parse_address(str(address), ipaddress.ip_network(subnet.cidr))
                address = str(parsed)
                own = ipam.eui64(subnet.cidr, port.mac_address) if _automatic(subnet) else None
                if own not in (None, address) and port.device_owner != ROUTER_INTERFACE:
                    raise BadRequest(
                        f"IPv6 address {address} cannot be directly assigned to a port on "
                        f"subnet {subnet.id} as the subnet is configured for automatic "
                        "addresses.",
                        type="InvalidInput",
                    )
                if subnet.gateway_ip == address and not port.device_owner.startswith(
                    "network:router"
                ):
                    raise Conflict(
                        f"IP address {address} already allocated in subnet {subnet.id}.",
                        type="IpAddressAlreadyAllocated",
                    )
            elif _automatic(subnet):
                address = ipam.eui64(subnet.cidr, port.mac_address)
            else:
                address = await _free_address(session, subnet)
                if address is None:
                    raise ipam.IpAddressGenerationFailure(network.id)
            plan.append((subnet, address))
    for subnet, address in plan:
        session.add(
            IPAllocation(
                subnet_id=subnet.id, ip_address=address, port_id=port.id, network_id=network.id
            )
        )


def _automatic(subnet: Subnet) -> bool:
    """Whether hosts make their own addresses in ``subnet`` from their MACs (SLAAC)."""
    return subnet.ip_version == 6 and ipam.auto_address(subnet.ipv6_address_mode)


async def _follow_mac(session: AsyncSession, port: Port) -> None:
    """A port's EUI-64 addresses follow its MAC, as in Neutron."""
    rows = await session.execute(
        select(IPAllocation, Subnet)
        .join(Subnet, Subnet.id == IPAllocation.subnet_id)
        .where(IPAllocation.port_id == port.id)
    )
    for allocation, subnet in list(rows):
        if not _automatic(subnet):
            continue
        address = ipam.eui64(subnet.cidr, port.mac_address)
        if allocation.ip_address != address:
            await session.delete(allocation)
            await session.flush()
            session.add(
                IPAllocation(
                    subnet_id=subnet.id,
                    ip_address=address,
                    port_id=port.id,
                    network_id=port.network_id,
                )
            )


async def _free_address(session: AsyncSession, subnet: Subnet) -> str | None:
    """A free address of ``subnet``'s pools (never its gateway), or None when exhausted."""
    used = set(
        (
            await session.execute(
                select(IPAllocation.ip_address).where(IPAllocation.subnet_id == subnet.id)
            )
        ).scalars()
    )
    if subnet.gateway_ip:
        used.add(subnet.gateway_ip)
    return ipam.pick_address(subnet.allocation_pools, used)


async def _explicit_conflict(session: AsyncSession, wanted: list[dict[str, str]] | None) -> None:
    """A requested address already held is the client's mistake, not a race to retry."""
    for entry in wanted or []:
        if "ip_address" in entry and "subnet_id" in entry:
            held = await session.get(
                IPAllocation, (entry["subnet_id"], str(ipaddress.ip_address(entry["ip_address"])))
            )
            if held is not None:
                raise Conflict(
                    f"IP address {entry['ip_address']} already allocated in subnet "
                    f"{entry['subnet_id']}.",
                    type="IpAddressAlreadyAllocated",
                )


def _apply(request: Request, row: Port, body: dict[str, Any]) -> None:
    if any(name in body for name in ADMIN_ONLY) and not is_admin(request):
        raise Forbidden("Only administrators may set port bindings.", type="PolicyNotAuthorized")
    for name in ("name", "description", "device_id", "device_owner"):
        if name in body:
            if not isinstance(body[name], str) or len(body[name]) > 255:
                raise BadRequest(f"Invalid input for {name}.")
            setattr(row, name, body[name])
    for name in ("admin_state_up", "port_security_enabled"):
        if name in body:
            if not isinstance(body[name], bool):
                raise BadRequest(f"Invalid input for {name}: a boolean is expected.")
            setattr(row, name, body[name])
    if "security_groups" in body:
        groups = body["security_groups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise BadRequest("Invalid input for security_groups.")
        row.security_groups = groups
    if "allowed_address_pairs" in body:
        pairs = body["allowed_address_pairs"]
        if not isinstance(pairs, list) or not all(
            isinstance(p, dict) and "ip_address" in p for p in pairs
        ):
            raise BadRequest("Each allowed address pair needs ip_address.")
        for pair in pairs:
            try:
                ipaddress.ip_network(pair["ip_address"], strict=False)
            except ValueError:
                raise BadRequest(f"Invalid allowed address pair {pair['ip_address']!r}.") from None
        row.allowed_address_pairs = [
            {"ip_address": p["ip_address"], "mac_address": p.get("mac_address", row.mac_address)}
            for p in pairs
        ]
    protected = row.security_groups or row.allowed_address_pairs
    if (
        not row.port_security_enabled
        and protected
        and ({"security_groups", "allowed_address_pairs"} & set(body))
    ):
        raise Conflict(
            "Port has security groups or allowed address pairs while port security is off.",
            type="PortSecurityAndIPRequiredForSecurityGroups",
        )
    if "binding:host_id" in body:
        row.binding_host_id = str(body["binding:host_id"] or "")
    if "binding:profile" in body:
        row.binding_profile = dict(body["binding:profile"] or {})
    if "binding:vnic_type" in body:
        if body["binding:vnic_type"] not in (
            "normal",
            "direct",
            "macvtap",
            "baremetal",
            "virtio-forwarder",
        ):
            raise BadRequest("Invalid binding:vnic_type.")
        row.binding_vnic_type = body["binding:vnic_type"]


async def _bind(request: Request, row: Port, fixed_ips: list[dict[str, str]]) -> None:
    driver = service(request).driver
    view = port_view(row, fixed_ips, True)
    if row.binding_host_id:
        row.binding_vif_type, row.binding_vif_details = await driver.bind_port(
            view, row.binding_host_id
        )
    else:
        row.binding_vif_type, row.binding_vif_details = "unbound", {}
    row.status = await driver.port_status(port_view(row, fixed_ips, True))


@routes.post("/v2.0/ports")
async def create_port(request: Request) -> Response:
    data = await json_body(request)
    if is_bulk(data, "ports"):
        return await bulk_create(
            request, data["ports"], "port", create_port, delete_port, "port_id"
        )
    body = body_of(data, "port")
    if "network_id" not in body:
        raise BadRequest("Invalid input for operation: network_id is required.")
    mac = body.get("mac_address")
    if mac is not None and (not isinstance(mac, str) or not MAC.match(mac.lower())):
        raise BadRequest(f"Invalid input for mac_address: '{mac}' is not a valid MAC address.")
    wanted = _wanted_ips(body)
    network_service = service(request)
    context = caller(request)
    async with network_service.db.session() as session:
        network = await fetch(
            request, session, Network, str(body["network_id"]), "network", visible(request)
        )
    owner = str(body.get("project_id") or body.get("tenant_id") or context.project_id)
    if owner != context.project_id and not is_admin(request):
        raise Forbidden("Only administrators may create ports for other projects.")
    if network.external and network.project_id != context.project_id and not is_admin(request):
        raise Forbidden(
            "Ports on an external network are made by routers and floating IPs.",
            type="PolicyNotAuthorized",
        )
    enforce(request, "create", {"project_id": owner})
    device_owner = str(body.get("device_owner", ""))
    secured = body.get("port_security_enabled", network.port_security_enabled)
    if "security_groups" in body:
        async with network_service.db.session() as session:
            await check_groups(request, session, list(body["security_groups"] or []))
    elif secured and not device_owner.startswith("network:"):
        body = {**body, "security_groups": [await ensure_default(request, owner)]}
    async with quota_held(request, owner, "port"):
        result = await _create_with_retries(request, body, network, owner, wanted)
    return one("port", result, request, 201)


async def _create_with_retries(
    request: Request,
    body: dict[str, Any],
    network: Network,
    owner: str,
    wanted: list[dict[str, str]] | None,
) -> dict[str, Any]:
    """Create the port; a lost race for an address or MAC is retried with a fresh view."""
    network_service = service(request)
    given_mac = body.get("mac_address")
    for attempt in range(ATTEMPTS):
        try:
            async with network_service.db.session() as session:
                await _explicit_conflict(session, wanted)
                if given_mac:
                    taken = await session.scalar(
                        select(Port.id).where(
                            Port.network_id == network.id, Port.mac_address == given_mac.lower()
                        )
                    )
                    if taken:
                        raise MacAddressInUse(
                            f"Unable to complete operation for network {network.id}. "
                            f"The mac address {given_mac} is in use.",
                            type="MacAddressInUse",
                        )
                row = Port(
                    network_id=network.id,
                    project_id=owner,
                    name="",
                    description="",
                    tags=[],
                    revision_number=1,
                    mac_address=(given_mac or random_mac()).lower(),
                    device_id="",
                    device_owner="",
                    security_groups=[],
                    allowed_address_pairs=[],
                    admin_state_up=True,
                    port_security_enabled=network.port_security_enabled,
                    binding_host_id="",
                    binding_vnic_type="normal",
                    binding_profile={},
                )
                _apply(request, row, body)
                session.add(row)
                await session.flush()
                await _allocate(session, network, row, wanted)
                await session.flush()
                fixed = (await fixed_ips_of(session, [row.id])).get(row.id, [])
                await _bind(request, row, fixed)
                await session.flush()
                return port_view(row, fixed, is_admin(request))
        except IntegrityError:
            if attempt == ATTEMPTS - 1:
                raise ipam.IpAddressGenerationFailure(network.id) from None
    raise AssertionError("unreachable")


async def create_service_port(
    request: Request,
    network: Network,
    owner: str,
    device_owner: str,
    device_id: str,
    wanted: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A port the network service itself holds (router gateway or interface, floating IP)."""
    body = {"network_id": network.id, "device_owner": device_owner, "device_id": device_id}
    return await _create_with_retries(request, body, network, owner, wanted)


async def delete_service_port(request: Request, port_id: str) -> None:
    """Remove a port the network service holds, with its addresses."""
    async with service(request).db.session() as session:
        await session.execute(delete(IPAllocation).where(IPAllocation.port_id == port_id))
        await session.execute(delete(Port).where(Port.id == port_id))


@routes.get("/v2.0/ports")
async def list_ports(request: Request) -> Response:
    enforce(request, "read")
    admin = is_admin(request)
    query = scoped(select(Port), Port, request)
    async with service(request).db.session() as session:
        ids = [row.id for row in (await session.execute(query)).scalars()]
        fixed = await fixed_ips_of(session, ids)
    if "fixed_ips" in request.query_params:
        wanted = request.query_params.getlist("fixed_ips")
        keep = set()
        for port_id, ips in fixed.items():
            for ip in ips:
                if any(
                    f"ip_address={ip['ip_address']}" == w or f"subnet_id={ip['subnet_id']}" == w
                    for w in wanted
                ):
                    keep.add(port_id)
        query = query.where(Port.id.in_(keep))
    return await list_response(
        request,
        query,
        Port,
        "ports",
        lambda row: port_view(row, fixed.get(row.id, []), admin),
        COLUMNS,
    )


@routes.get("/v2.0/ports/{port_id}")
async def show_port(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        row = await fetch(request, session, Port, request.path_params["port_id"], "port")
        fixed = (await fixed_ips_of(session, [row.id])).get(row.id, [])
        return one("port", port_view(row, fixed, is_admin(request)), request)


@routes.put("/v2.0/ports/{port_id}")
async def update_port(request: Request) -> Response:
    body = body_of(await json_body(request), "port")
    for frozen in ("network_id", "mac_address") if not is_admin(request) else ("network_id",):
        if frozen in body:
            raise BadRequest(f"Cannot update read-only attribute {frozen}.")
    wanted = _wanted_ips(body)
    network_service = service(request)
    try:
        async with network_service.db.session() as session:
            row = await fetch(request, session, Port, request.path_params["port_id"], "port")
            enforce(request, "update", {"project_id": row.project_id})
            if body.get("security_groups"):
                await check_groups(request, session, list(body["security_groups"]))
            _apply(request, row, body)
            if wanted is not None:
                network = await session.get(Network, row.network_id)
                assert network is not None
                current = {
                    (ip["subnet_id"], ip["ip_address"])
                    for ip in (await fixed_ips_of(session, [row.id])).get(row.id, [])
                }
                kept = [w for w in wanted if (w.get("subnet_id"), w.get("ip_address")) in current]
                fresh = [w for w in wanted if w not in kept]
                await session.execute(delete(IPAllocation).where(IPAllocation.port_id == row.id))
                await session.flush()
                await _explicit_conflict(session, fresh)
                await _allocate(session, network, row, kept + fresh)
            if "mac_address" in body:
                row.mac_address = str(body["mac_address"]).lower()
                await _follow_mac(session, row)
            await session.flush()
            fixed = (await fixed_ips_of(session, [row.id])).get(row.id, [])
            await _bind(request, row, fixed)
            row.revision_number += 1
            await session.flush()
            return one("port", port_view(row, fixed, is_admin(request)), request)
    except IntegrityError:
        raise Conflict(
            "A requested address or MAC is already in use.", type="IpAddressAlreadyAllocated"
        ) from None


@routes.delete("/v2.0/ports/{port_id}")
async def delete_port(request: Request) -> Response:
    network_service = service(request)
    async with network_service.db.session() as session:
        row = await fetch(request, session, Port, request.path_params["port_id"], "port")
        enforce(request, "delete", {"project_id": row.project_id})
        if row.device_owner in SERVICE_OWNED:
            raise Conflict(
                f"Port {row.id} cannot be deleted directly via the port API: has device owner "
                f"{row.device_owner}.",
                type="ServicePortInUse",
            )
        project_id = row.project_id
        await session.execute(
            update(FloatingIP)
            .where(FloatingIP.port_id == row.id)
            .values(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")
        )
        await session.execute(delete(IPAllocation).where(IPAllocation.port_id == row.id))
        await session.delete(row)
    await network_service.quotas.release(project_id, {"port": 1})
    return Response(status_code=204)
