"""``/v3/os-quota-sets`` (per project, with usage) and ``/v3/os-quota-class-sets`` (defaults).

Resources: volumes, gigabytes, snapshots, backups, backup_gigabytes, groups,
per_volume_gigabytes, and ``volumes_<type>``, ``gigabytes_<type>``,
``snapshots_<type>`` for every volume type.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import as_bool, body_of, enforce, invalid, service
from onestack.volume.models import QuotaClass, VolumeType

routes = RouteTable()

# Limits that are checked per request, never counted.
NOT_COUNTED = ("per_volume_gigabytes",)


async def _prepare(request: Request) -> list[str]:
    """Defaults refreshed for every volume type; the type names."""
    async with service(request).db.session() as session:
        names = list((await session.execute(select(VolumeType.name))).scalars())
    await service(request).refresh_quota_defaults(names)
    return names


def _values(body: dict[str, Any], known: set[str]) -> dict[str, int]:
    values = {}
    for key, value in body.items():
        if key in ("id", "tenant_id", "project_id"):
            continue
        if key not in known:
            raise invalid(f"Bad key(s) {key} in quota set.")
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise invalid(f"Quota limit {value!r} for {key} must be an integer of -1 or more.")
        values[key] = value
    return values


@routes.get("/v3/os-quota-sets/{project_id}")
async def show_quota(request: Request) -> Response:
    project = request.path_params["project_id"]
    enforce(request, "read", {"project_id": project})
    await _prepare(request)
    quotas = service(request).quotas
    if as_bool(request.query_params.get("usage", "false"), "usage"):
        usage = await quotas.usage(project)
        body: dict[str, Any] = {
            name: {
                "limit": u["limit"],
                "in_use": u["in_use"],
                "reserved": u["reserved"],
                "allocated": 0,
            }
            for name, u in usage.items()
        }
    else:
        body = dict(await quotas.limits(project))
    return JSONResponse({"quota_set": {"id": project, **body}})


@routes.get("/v3/os-quota-sets/{project_id}/defaults")
async def show_defaults(request: Request) -> Response:
    project = request.path_params["project_id"]
    enforce(request, "read", {"project_id": project})
    await _prepare(request)
    return JSONResponse({"quota_set": {"id": project, **service(request).quotas.defaults}})


@routes.put("/v3/os-quota-sets/{project_id}")
async def update_quota(request: Request) -> Response:
    enforce(request, "manage_quotas")
    project = request.path_params["project_id"]
    body = body_of(await json_body(request), "quota_set")
    await _prepare(request)
    quotas = service(request).quotas
    values = _values(body, set(quotas.defaults))
    usage = await quotas.usage(project)
    for name, limit in values.items():
        used = usage.get(name, {}).get("in_use", 0) + usage.get(name, {}).get("reserved", 0)
        if name not in NOT_COUNTED and limit != -1 and limit < used:
            raise invalid(
                f"Quota {name}: limit of {limit} must be equal or greater than existing "
                f"resources. Current usage is {used}."
            )
    limits = await quotas.set_limits(project, values)
    return JSONResponse({"quota_set": limits})


@routes.delete("/v3/os-quota-sets/{project_id}")
async def reset_quota(request: Request) -> Response:
    enforce(request, "manage_quotas")
    await service(request).quotas.reset_limits(request.path_params["project_id"])
    return Response(status_code=200)


@routes.get("/v3/os-quota-class-sets/{class_name}")
async def show_quota_class(request: Request) -> Response:
    enforce(request, "manage_quotas")
    await _prepare(request)
    name = request.path_params["class_name"]
    return JSONResponse({"quota_class_set": {"id": name, **service(request).quotas.defaults}})


@routes.put("/v3/os-quota-class-sets/{class_name}")
async def update_quota_class(request: Request) -> Response:
    enforce(request, "manage_quotas")
    name = request.path_params["class_name"]
    if name != "default":
        raise invalid("Only the 'default' quota class is supported.")
    body = body_of(await json_body(request), "quota_class_set")
    await _prepare(request)
    values = _values(body, set(service(request).quotas.defaults))
    async with service(request).db.session() as session:
        for resource, limit in values.items():
            row = await session.get(QuotaClass, (name, resource))
            if row is None:
                session.add(QuotaClass(class_name=name, resource=resource, hard_limit=limit))
            else:
                row.hard_limit = limit
    await _prepare(request)
    return JSONResponse({"quota_class_set": dict(service(request).quotas.defaults)})
