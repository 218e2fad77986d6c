"""``/os-hypervisors``: compute nodes with their capacity and usage, statistics and the
servers on each (``openstack hypervisor``). From 2.53 ids are the nodes' uuids; from 2.88
the capacity fields (kept in placement) and the statistics are gone, as in Nova."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import as_bool, at_least, enforce, limit_marker, own, service
from onestack.compute.api.services import COMPUTE_BINARY, dashed, records_with_zones
from onestack.compute.models import ComputeNode, Instance
from onestack.core.asgi.errors import BadRequest, NotFound, NotImplementedYet
from onestack.core.asgi.routing import RouteTable
from onestack.core.heartbeat import ServiceRecord

routes = RouteTable()


async def _services_by_host(request: Request) -> dict[str, tuple[int, ServiceRecord]]:
    """The compute service of each host, with its pre-2.53 number."""
    return {
        record.host: (number, record)
        for number, record, _ in await records_with_zones(request)
        if record.binary == COMPUTE_BINARY
    }


def _summary(
    request: Request, node: ComputeNode, found: tuple[int, ServiceRecord] | None
) -> dict[str, Any]:
    record = found[1] if found else None
    return {
        "id": node.uuid if at_least(request, "2.53") else node.id,
        "hypervisor_hostname": node.hypervisor_hostname,
        "state": "up" if record is not None and record.up else "down",
        "status": "disabled" if record is not None and record.disabled else "enabled",
    }


def _detail(
    request: Request, node: ComputeNode, found: tuple[int, ServiceRecord] | None
) -> dict[str, Any]:
    view = _summary(request, node, found)
    number, record = found if found else (None, None)
    view.update(
        {
            "hypervisor_type": node.hypervisor_type,
            "hypervisor_version": node.hypervisor_version,
            "host_ip": node.host_ip,
            "service": {
                "host": node.host,
                "id": (
                    (dashed(record.id) if at_least(request, "2.53") else number)
                    if record is not None
                    else None
                ),
                "disabled_reason": record.disabled_reason if record is not None else None,
            },
        }
    )
    if at_least(request, "2.88"):
        view["uptime"] = None
        return view
    free_disk = node.local_gb - node.local_gb_used
    view.update(
        {
            "vcpus": node.vcpus,
            "vcpus_used": node.vcpus_used,
            "memory_mb": node.memory_mb,
            "memory_mb_used": node.memory_mb_used,
            "free_ram_mb": node.memory_mb - node.memory_mb_used,
            "local_gb": node.local_gb,
            "local_gb_used": node.local_gb_used,
            "free_disk_gb": free_disk,
            "disk_available_least": free_disk,
            "current_workload": 0,
            "running_vms": node.running_vms,
            "cpu_info": node.cpu_info if at_least(request, "2.28") else json.dumps(node.cpu_info),
        }
    )
    return view


async def _servers(session: AsyncSession, node: ComputeNode) -> list[dict[str, str]]:
    query = (
        select(Instance.uuid, Instance.display_name)
        .where(Instance.node == node.hypervisor_hostname, Instance.deleted.is_(False))
        .order_by(Instance.id)
    )
    return [{"uuid": row.uuid, "name": row.display_name} for row in await session.execute(query)]


async def _nodes(request: Request, session: AsyncSession, pattern: str | None) -> list[ComputeNode]:
    query = select(ComputeNode).order_by(ComputeNode.id)
    if pattern:
        query = query.where(ComputeNode.hypervisor_hostname.contains(pattern, autoescape=True))
    return list((await session.execute(query)).scalars())


async def _listing(request: Request, *, detail: bool) -> Response:
    enforce(request, "manage_hosts", own(request))
    params = request.query_params
    pattern = params.get("hypervisor_hostname_pattern")
    with_servers = as_bool(params.get("with_servers", "false"), "with_servers")
    if (pattern is not None or "with_servers" in params) and not at_least(request, "2.53"):
        raise BadRequest("hypervisor_hostname_pattern and with_servers need 2.53 or later.")
    limit, marker = limit_marker(request) if at_least(request, "2.33") else (None, None)
    if pattern is not None and (limit is not None or marker is not None):
        raise BadRequest("Paging is not supported with hypervisor_hostname_pattern.")
    records = await _services_by_host(request)
    async with service(request).db.session() as session:
        nodes = await _nodes(request, session, pattern)
        if pattern is not None and not nodes:
            raise NotFound(f"No hypervisor matching {pattern!r} could be found.")
        if marker is not None:
            ids = [str(node.uuid if at_least(request, "2.53") else node.id) for node in nodes]
            if marker not in ids:
                raise BadRequest(f"marker [{marker}] not found")
            nodes = nodes[ids.index(marker) + 1 :]
        if limit is not None:
            nodes = nodes[:limit]
        views = []
        for node in nodes:
            record = records.get(node.host)
            view = _detail(request, node, record) if detail else _summary(request, node, record)
            if with_servers:
                servers = await _servers(session, node)
                if servers:
                    view["servers"] = servers
            views.append(view)
    return JSONResponse({"hypervisors": views})


@routes.get("/v2.1/os-hypervisors")
async def list_hypervisors(request: Request) -> Response:
    return await _listing(request, detail=False)


@routes.get("/v2.1/os-hypervisors/detail")
async def list_hypervisors_detail(request: Request) -> Response:
    return await _listing(request, detail=True)


@routes.get("/v2.1/os-hypervisors/statistics")
async def hypervisor_statistics(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    if at_least(request, "2.88"):
        raise NotFound("The hypervisor statistics API was removed in 2.88.")
    async with service(request).db.session() as session:
        nodes = await _nodes(request, session, None)
    totals = {
        "count": len(nodes),
        "vcpus": sum(node.vcpus for node in nodes),
        "vcpus_used": sum(node.vcpus_used for node in nodes),
        "memory_mb": sum(node.memory_mb for node in nodes),
        "memory_mb_used": sum(node.memory_mb_used for node in nodes),
        "free_ram_mb": sum(node.memory_mb - node.memory_mb_used for node in nodes),
        "local_gb": sum(node.local_gb for node in nodes),
        "local_gb_used": sum(node.local_gb_used for node in nodes),
        "free_disk_gb": sum(node.local_gb - node.local_gb_used for node in nodes),
        "disk_available_least": sum(node.local_gb - node.local_gb_used for node in nodes),
        "running_vms": sum(node.running_vms for node in nodes),
        "current_workload": 0,
    }
    return JSONResponse({"hypervisor_statistics": totals})


async def _one(request: Request, session: AsyncSession, hypervisor_id: str) -> ComputeNode:
    node = None
    if at_least(request, "2.53"):
        found = await session.execute(select(ComputeNode).where(ComputeNode.uuid == hypervisor_id))
        node = found.scalar_one_or_none()
    elif hypervisor_id.isdigit():
        node = await session.get(ComputeNode, int(hypervisor_id))
    if node is None:
        raise NotFound(f"Hypervisor with ID '{hypervisor_id}' could not be found.")
    return node


@routes.get("/v2.1/os-hypervisors/{hypervisor_id}")
async def show_hypervisor(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    params = request.query_params
    if "with_servers" in params and not at_least(request, "2.53"):
        raise BadRequest("with_servers needs 2.53 or later.")
    with_servers = as_bool(params.get("with_servers", "false"), "with_servers")
    records = await _services_by_host(request)
    async with service(request).db.session() as session:
        node = await _one(request, session, request.path_params["hypervisor_id"])
        view = _detail(request, node, records.get(node.host))
        if with_servers:
            view["servers"] = await _servers(session, node)
    return JSONResponse({"hypervisor": view})


@routes.get("/v2.1/os-hypervisors/{hypervisor_id}/uptime")
async def hypervisor_uptime(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    if at_least(request, "2.88"):
        raise NotFound("The uptime API was removed in 2.88; see the hypervisor's uptime.")
    async with service(request).db.session() as session:
        await _one(request, session, request.path_params["hypervisor_id"])
    raise NotImplementedYet("The hypervisor driver does not report uptime.")


@routes.get("/v2.1/os-hypervisors/{pattern}/servers")
@routes.get("/v2.1/os-hypervisors/{pattern}/search")
async def search_hypervisors(request: Request) -> Response:
    """Before 2.53: hypervisors whose name contains ``pattern`` (``/servers``: with theirs)."""
    enforce(request, "manage_hosts", own(request))
    if at_least(request, "2.53"):
        raise NotFound("Use ?hypervisor_hostname_pattern= (and with_servers) from 2.53.")
    pattern = request.path_params["pattern"]
    with_servers = request.url.path.endswith("/servers")
    records = await _services_by_host(request)
    async with service(request).db.session() as session:
        nodes = await _nodes(request, session, pattern)
        if not nodes:
            raise NotFound(f"No hypervisor matching {pattern!r} could be found.")
        views = []
        for node in nodes:
            view = _summary(request, node, records.get(node.host))
            if with_servers:
                view["servers"] = await _servers(session, node)
            views.append(view)
    return JSONResponse({"hypervisors": views})
