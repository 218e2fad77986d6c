"""``/os-simple-tenant-usage``: server hours and the RAM, CPU and disk hours they make, per
project over a period (``openstack usage list|show``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import as_bool, enforce, limit_marker, own, service
from onestack.compute.models import Instance
from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()
FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")


def _when(text: str | None, name: str) -> dt.datetime:
    if not text:
        return dt.datetime.now(dt.UTC)
    for fmt in FORMATS:
        try:
            return dt.datetime.strptime(text.rstrip("Z"), fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise BadRequest(f"Invalid {name} time {text!r}: expected %Y-%m-%dT%H:%M:%S[.%f].")


def _period(request: Request) -> tuple[dt.datetime, dt.datetime]:
    start = _when(request.query_params.get("start"), "start")
    end = _when(request.query_params.get("end"), "end")
    if start > end:
        raise BadRequest("Invalid start time. The start time cannot occur after the end time.")
    return start, end


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return _aware(value).strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _server_usage(
    instance: Instance, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> dict[str, Any]:
    launched = _aware(instance.launched_at or instance.created_at)
    stopped = _aware(instance.terminated_at) if instance.terminated_at else None
    began = max(launched, start)
    ended = min(stopped or end, end)
    hours = max((ended - began).total_seconds(), 0) / 3600
    flavor = instance.flavor or {}
    return {
        "instance_id": instance.uuid,
        "name": instance.display_name,
        "tenant_id": instance.project_id,
        "hours": hours,
        "memory_mb": instance.memory_mb,
        "local_gb": instance.root_gb + instance.ephemeral_gb,
        "vcpus": instance.vcpus,
        "flavor": flavor.get("name") or flavor.get("original_name", ""),
        "started_at": _iso(launched),
        "ended_at": _iso(stopped),
        "state": "terminated" if instance.deleted else instance.vm_state,
        "uptime": int(((stopped or now) - launched).total_seconds()),
    }


def _totals(
    project: str, usages: list[dict[str, Any]], start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    return {
        "tenant_id": project,
        "total_hours": sum(u["hours"] for u in usages),
        "total_memory_mb_usage": sum(u["hours"] * u["memory_mb"] for u in usages),
        "total_vcpus_usage": sum(u["hours"] * u["vcpus"] for u in usages),
        "total_local_gb_usage": sum(u["hours"] * u["local_gb"] for u in usages),
        "start": _iso(start),
        "stop": _iso(end),
    }


async def _instances(
    request: Request, start: dt.datetime, end: dt.datetime, project: str | None
) -> list[Instance]:
    limit, marker = limit_marker(request)
    query = (
        select(Instance)
        .where(or_(Instance.terminated_at.is_(None), Instance.terminated_at >= start))
        .where(Instance.created_at <= end)
        .order_by(Instance.id)
    )
    if project:
        query = query.where(Instance.project_id == project)
    async with service(request).db.session() as session:
        if marker:
            found = await session.execute(select(Instance.id).where(Instance.uuid == marker))
            marker_id = found.scalar_one_or_none()
            if marker_id is None:
                raise BadRequest(f"marker [{marker}] not found")
            query = query.where(Instance.id > marker_id)
        if limit is not None:
            query = query.limit(limit)
        return list((await session.execute(query)).scalars())


@routes.get("/v2.1/os-simple-tenant-usage")
async def list_usage(request: Request) -> Response:
    enforce(request, "admin", own(request))
    start, end = _period(request)
    detailed = as_bool(request.query_params.get("detailed", "0"), "detailed")
    now = dt.datetime.now(dt.UTC)
    by_project: dict[str, list[dict[str, Any]]] = {}
    for instance in await _instances(request, start, end, None):
        usage = _server_usage(instance, start, end, now)
        by_project.setdefault(instance.project_id, []).append(usage)
    answer = []
    for project, usages in sorted(by_project.items()):
        entry = _totals(project, usages, start, end)
        if detailed:
            entry["server_usages"] = usages
        answer.append(entry)
    return JSONResponse({"tenant_usages": answer})


@routes.get("/v2.1/os-simple-tenant-usage/{project_id}")
async def show_usage(request: Request) -> Response:
    project = request.path_params["project_id"]
    enforce(request, "read", {"project_id": project})
    start, end = _period(request)
    now = dt.datetime.now(dt.UTC)
    usages = [
        _server_usage(instance, start, end, now)
        for instance in await _instances(request, start, end, project)
    ]
    entry = _totals(project, usages, start, end) if usages else {}
    if usages:
        entry["server_usages"] = usages
    return JSONResponse({"tenant_usage": entry})
