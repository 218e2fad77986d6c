"""``/os-quota-sets``: a project's compute limits, the defaults, the detail with usage,
update and reset (``openstack quota show|set`` for compute); with ``?user_id=`` the same
for one user within the project's limits (``user_quotas.py``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import as_bool, as_int, at_least, body_of, enforce, service
from onestack.compute.user_quotas import COUNTED, UserQuotas
from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()

# Shown for the microversions that still had them; nothing enforces them here.
LEGACY_FILES = {
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
}
LEGACY_NETWORK = {
    "fixed_ips": -1,
    "floating_ips": -1,
    "security_groups": -1,
    "security_group_rules": -1,
}


def _legacy(request: Request) -> dict[str, int]:
    extra: dict[str, int] = {}
    if not at_least(request, "2.57"):
        extra.update(LEGACY_FILES)
    if not at_least(request, "2.36"):
        extra.update(LEGACY_NETWORK)
    return extra


def _target(request: Request) -> dict[str, Any]:
    return {"project_id": request.path_params["project_id"]}


def _user(request: Request) -> str | None:
    """The ``user_id`` a request is about (Nova's per-user quotas), if any."""
    return request.query_params.get("user_id") or None


@routes.get("/v2.1/os-quota-sets/{project_id}")
async def show_quotas(request: Request) -> Response:
    enforce(request, "read", _target(request))
    project = request.path_params["project_id"]
    limits = await service(request).quotas.limits(project)
    user = _user(request)
    if user:
        limits = await UserQuotas(service(request).db).limits(project, user, limits)
    return JSONResponse({"quota_set": {"id": project, **_legacy(request), **limits}})


@routes.get("/v2.1/os-quota-sets/{project_id}/defaults")
async def show_defaults(request: Request) -> Response:
    enforce(request, "read", _target(request))
    project = request.path_params["project_id"]
    defaults = dict(service(request).quotas.defaults)
    return JSONResponse({"quota_set": {"id": project, **_legacy(request), **defaults}})


async def _user_usage(
    request: Request, project: str, user: str, usage: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """The project's usage seen by one user: its limits, and its own use of what is
    counted per user."""
    quotas = UserQuotas(service(request).db)
    limits = await quotas.limits(project, user, {r: u["limit"] for r, u in usage.items()})
    async with service(request).db.session() as session:
        used = await quotas.usage(session, project, user)
    return {
        resource: {
            "limit": limits[resource],
            "in_use": used[resource] if resource in COUNTED else entry["in_use"],
            "reserved": 0 if resource in COUNTED else entry["reserved"],
        }
        for resource, entry in usage.items()
    }


@routes.get("/v2.1/os-quota-sets/{project_id}/detail")
async def show_detail(request: Request) -> Response:
    enforce(request, "read", _target(request))
    project = request.path_params["project_id"]
    usage = await service(request).quotas.usage(project)
    user = _user(request)
    if user:
        usage = await _user_usage(request, project, user, usage)
    legacy = {
        name: {"limit": limit, "in_use": 0, "reserved": 0}
        for name, limit in _legacy(request).items()
    }
    return JSONResponse({"quota_set": {"id": project, **legacy, **usage}})


@routes.put("/v2.1/os-quota-sets/{project_id}")
async def update_quotas(request: Request) -> Response:
    enforce(request, "manage_quotas", _target(request))
    project = request.path_params["project_id"]
    body = body_of(await json_body(request), "quota_set")
    quotas = service(request).quotas
    force = as_bool(body.pop("force", False), "force")
    known = set(quotas.defaults)
    accepted_legacy = set(_legacy(request))
    unknown = set(body) - known - accepted_legacy
    if unknown:
        raise BadRequest(
            f"Additional properties are not allowed ({', '.join(sorted(unknown))} was unexpected)"
        )
    wanted = {
        name: as_int(value, name, minimum=-1) for name, value in body.items() if name in known
    }
    user = _user(request)
    if user:
        limits = await _set_user(request, project, user, wanted, force)
        return JSONResponse({"quota_set": {**_legacy(request), **limits}})
    if not force:
        usage = await quotas.usage(project)
        for name, limit in wanted.items():
            held = usage[name]["in_use"] + usage[name]["reserved"]
            if limit != -1 and limit < held:
                raise BadRequest(
                    f"Quota limit {limit} for {name} must be greater than or equal to "
                    f"already used and reserved {held}."
                )
    limits = await quotas.set_limits(project, wanted)
    return JSONResponse({"quota_set": {**_legacy(request), **limits}})


async def _set_user(
    request: Request, project: str, user: str, wanted: dict[str, int], force: bool
) -> dict[str, int]:
    """Set a user's limits within the project's (400 outside, unless ``force``)."""
    project_limits = await service(request).quotas.limits(project)
    quotas = UserQuotas(service(request).db)
    if not force:
        bounds = await quotas.settable(project, user, project_limits)
        for name, limit in wanted.items():
            minimum, maximum = bounds[name]
            if limit != -1 and limit < minimum:
                raise BadRequest(f"Quota limit {limit} for {name} must be greater than or "
                                 f"equal to already used and reserved {minimum}.")  # fmt: skip
            if maximum != -1 and (limit == -1 or limit > maximum):
                raise BadRequest(f"Quota limit {limit} for {name} must be less than or equal "
                                 f"to {maximum}.")  # fmt: skip
    await quotas.set_limits(project, user, wanted)
    return await quotas.limits(project, user, project_limits)


@routes.delete("/v2.1/os-quota-sets/{project_id}")
async def reset_quotas(request: Request) -> Response:
    enforce(request, "manage_quotas", _target(request))
    project, user = request.path_params["project_id"], _user(request)
    if user:
        await UserQuotas(service(request).db).reset(project, user)
    else:
        await service(request).quotas.reset_limits(project)
    return Response(status_code=202)
