"""``/v2.0/networks``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import APIError, BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import is_deadlock
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
from onestack.network.models import FloatingIP, IPAllocation, Network, Port, Subnet
from onestack.network.views import network_view

FLOATING_IP_OWNER = "network:floatingip"

routes = RouteTable()

COLUMNS = {
    "id": "id",
    "name": "name",
    "description": "description",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "admin_state_up": "admin_state_up",
    "status": "status",
    "shared": "shared",
    "router:external": "external",
    "mtu": "mtu",
    "port_security_enabled": "port_security_enabled",
    "provider:network_type": "network_type",
    "provider:physical_network": "physical_network",
    "provider:segmentation_id": "segmentation_id",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "revision_number": "revision_number",
}
ADMIN_ONLY = ("shared", "router:external", "provider:network_type",
              "provider:physical_network", "provider:segmentation_id")  # fmt: skip
SEGMENT_RANGES = {"vlan": (1, 4094), "vxlan": (1, 16777215), "geneve": (1, 16777215)}
# The physical network's MTU, and what VXLAN's headers (outer IPv4, UDP, VXLAN, Ethernet) take.
PHYSICAL_MTU = 1500
VXLAN_OVERHEAD = 50
# Creates racing for the lowest free VNI: each loser takes the next one.
SEGMENT_ATTEMPTS = 32


def visible(request: Request) -> Any:
    return Network.shared.is_(True) | Network.external.is_(True)


async def _subnet_ids(session: Any, network_ids: list[str]) -> dict[str, list[str]]:
    rows = await session.execute(
        select(Subnet.network_id, Subnet.id).where(Subnet.network_id.in_(network_ids))
    )
    found: dict[str, list[str]] = {}
    for network_id, subnet_id in rows:
        found.setdefault(network_id, []).append(subnet_id)
    return found


def _check_provider(request: Request, row: Network, body: dict[str, Any]) -> None:
    driver = service(request).driver
    kind = body.get("provider:network_type", row.network_type or "local")
    if kind not in driver.network_types:
        raise BadRequest(
            f"Network type {kind} is not available on this cloud's {driver.name} data plane "
            f"(available: {', '.join(sorted(driver.network_types))}).",
            type="InvalidInput",
        )
    physical = body.get("provider:physical_network")
    segment = body.get("provider:segmentation_id")
    if kind == "flat" and not physical:
        raise BadRequest("provider:physical_network is required for flat networks.")
    if kind in ("local",) and (physical or segment is not None):
        raise BadRequest("local networks take no physical network or segmentation id.")
    if segment is not None:
        low, high = SEGMENT_RANGES.get(kind, (0, -1))
        if not isinstance(segment, int) or not low <= segment <= high:
            raise BadRequest(f"Invalid segmentation id {segment} for {kind} networks.")
    row.network_type = kind
    row.physical_network = physical
    row.segmentation_id = segment


def _apply(request: Request, row: Network, body: dict[str, Any], creating: bool) -> None:
    if any(name in body for name in ADMIN_ONLY) and not is_admin(request):
        raise Forbidden(
            "(rule:create_network) is disallowed by policy: admin attributes.",
            type="PolicyNotAuthorized",
        )
    for name, kind in (("name", str), ("description", str)):
        if name in body:
            if not isinstance(body[name], kind) or len(body[name]) > 255:
                raise BadRequest(f"Invalid input for {name}.")
            setattr(row, name, body[name])
    for name, column in (
        ("admin_state_up", "admin_state_up"),
        ("shared", "shared"),
        ("router:external", "external"),
        ("port_security_enabled", "port_security_enabled"),
    ):
        if name in body:
            if not isinstance(body[name], bool):
                raise BadRequest(f"Invalid input for {name}: a boolean is expected.")
            setattr(row, column, body[name])
    if "mtu" in body:
        if not isinstance(body["mtu"], int) or not 68 <= body["mtu"] <= 9000:
            raise BadRequest("Invalid input for mtu: 68 to 9000.")
        row.mtu = body["mtu"]
    if "availability_zone_hints" in body:
        hints = body["availability_zone_hints"]
        if not isinstance(hints, list) or any(h != "nova" for h in hints):
            raise BadRequest("Invalid availability_zone_hints: the only zone is 'nova'.")
        row.availability_zone_hints = hints
    if creating or any(name.startswith("provider:") for name in body):
        if not creating and any(name.startswith("provider:") for name in body):
            raise BadRequest("Provider attributes cannot change after creation.")
        _check_provider(request, row, body)
    if row.network_type == "vxlan":
        largest = PHYSICAL_MTU - VXLAN_OVERHEAD
        if "mtu" not in body and creating:
            row.mtu = largest
        elif "mtu" in body and row.mtu > largest:
            raise BadRequest(f"Requested MTU is too big, maximum is {largest}.")


async def _allocate_vni(request: Request, session: Any, row: Network) -> None:
    """Give a vxlan network without a segmentation id the lowest free VNI of the range.

    A VNI already taken is a 409 and an exhausted range a 503, as in Neutron.
    """
    if row.network_type != "vxlan":
        return
    used = set(
        (
            await session.execute(
                select(Network.segmentation_id).where(Network.network_type == "vxlan")
            )
        ).scalars()
    )
    if row.segmentation_id is not None:
        if row.segmentation_id in used:
            raise _segment_in_use(row)
        return
    low, high = service(request).settings.network.vni_range
    free = next((vni for vni in range(low, high + 1) if vni not in used), None)
    if free is None:
        raise APIError(
            "Unable to create the network. No tenant network is available for allocation.",
            status=503,
            type="NoNetworkAvailable",
        )
    row.segmentation_id = free


def _segment_in_use(row: Network) -> Conflict:
    """Neutron's 409 for a segmentation id another network of the type holds."""
    if row.network_type == "vlan":
        return Conflict(
            f"Unable to create the network. The VLAN {row.segmentation_id} on physical network "
            f"{row.physical_network} is in use.",
            type="VlanIdInUse",
        )
    return Conflict(
        f"Unable to create the network. The tunnel ID {row.segmentation_id} is in use.",
        type="TunnelIdInUse",
    )


@routes.post("/v2.0/networks")
async def create_network(request: Request) -> Response:
    data = await json_body(request)
    if is_bulk(data, "networks"):
        return await bulk_create(
            request, data["networks"], "network", create_network, delete_network, "network_id"
        )
    body = body_of(data, "network")
    context = caller(request)
    project_id = str(body.get("project_id") or body.get("tenant_id") or context.project_id)
    enforce(request, "create", {"project_id": project_id})
    if project_id != context.project_id and not is_admin(request):
        raise Forbidden("Only administrators may create networks for other projects.")

    def new_row() -> Network:
        row = Network(project_id=project_id, name="", description="", tags=[], revision_number=1)
        _apply(request, row, body, creating=True)
        return row

    row = new_row()
    network = service(request)
    async with quota_held(request, project_id, "network"):
        # The unique (network_type, segmentation_id) index settles races for a segment.
        for attempt in range(SEGMENT_ATTEMPTS):
            try:
                async with network.db.session() as session:
                    await _allocate_vni(request, session, row)
                    session.add(row)
                    await session.flush()
                    result = network_view(row, [], is_admin(request))
                break
            except DBAPIError as exc:
                last = attempt == SEGMENT_ATTEMPTS - 1
                if isinstance(exc, IntegrityError) and ("provider:segmentation_id" in body or last):
                    raise _segment_in_use(row) from None
                if last or not (isinstance(exc, IntegrityError) or is_deadlock(exc)):
                    raise
                row = new_row()
    return one("network", result, request, 201)


@routes.get("/v2.0/networks")
async def list_networks(request: Request) -> Response:
    enforce(request, "read")
    admin = is_admin(request)
    query = scoped(select(Network), Network, request, visible(request))

    def view(row: Network) -> dict[str, Any]:
        return network_view(row, subnets.get(row.id, []), admin)

    async with service(request).db.session() as session:
        ids = [row.id for row in (await session.execute(query)).scalars()]
        subnets = await _subnet_ids(session, ids)
    return await list_response(request, query, Network, "networks", view, COLUMNS)


@routes.get("/v2.0/networks/{network_id}")
async def show_network(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        row = await fetch(
            request,
            session,
            Network,
            request.path_params["network_id"],
            "network",
            visible(request),
        )
        subnets = await _subnet_ids(session, [row.id])
        return one(
            "network", network_view(row, subnets.get(row.id, []), is_admin(request)), request
        )


@routes.put("/v2.0/networks/{network_id}")
async def update_network(request: Request) -> Response:
    body = body_of(await json_body(request), "network")
    async with service(request).db.session() as session:
        row = await fetch(request, session, Network, request.path_params["network_id"], "network")
        enforce(request, "update", {"project_id": row.project_id})
        _apply(request, row, body, creating=False)
        row.revision_number += 1
        await session.flush()
        subnets = await _subnet_ids(session, [row.id])
        return one(
            "network", network_view(row, subnets.get(row.id, []), is_admin(request)), request
        )


@routes.delete("/v2.0/networks/{network_id}")
async def delete_network(request: Request) -> Response:
    network = service(request)
    async with network.db.session() as session:
        row = await fetch(request, session, Network, request.path_params["network_id"], "network")
        enforce(request, "delete", {"project_id": row.project_id})
        in_use = await session.scalar(
            select(func.count())
            .select_from(Port)
            .where(
                Port.network_id == row.id,
                ~Port.device_owner.startswith("network:dhcp"),
                Port.device_owner != FLOATING_IP_OWNER,
            )
        )
        if in_use:
            raise Conflict(
                f"Unable to complete operation on network {row.id}. There are one or more "
                "ports still in use on the network.",
                type="NetworkInUse",
            )
        fip_projects = await _delete_floating_ips(session, row.id)
        subnet_count = await session.scalar(
            select(func.count()).select_from(Subnet).where(Subnet.network_id == row.id)
        )
        project_id = row.project_id
        await session.delete(row)
    await network.quotas.release(project_id, {"network": 1, "subnet": subnet_count or 0})
    for fip_project in fip_projects:
        await network.quotas.release(fip_project, {"floatingip": 1})
    return Response(status_code=204)


async def _delete_floating_ips(session: AsyncSession, network_id: str) -> list[str]:
    """As in Neutron, an external network's floating IPs (none reaching a router, else its
    gateway port holds the network) go with it; the projects that held them, one per IP."""
    query = select(FloatingIP).where(FloatingIP.floating_network_id == network_id)
    projects = []
    for fip in list((await session.execute(query)).scalars()):
        projects.append(fip.project_id)
        port_id = fip.floating_port_id
        await session.delete(fip)
        await session.flush()
        await session.execute(delete(IPAllocation).where(IPAllocation.port_id == port_id))
        await session.execute(delete(Port).where(Port.id == port_id))
    return projects
