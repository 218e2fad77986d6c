"""``/os-quota-sets``: a project's compute limits, the defaults, the detail with usage,
update and reset (``openstack quota show|set`` for compute)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import as_bool, as_int, at_least, body_of, enforce, service
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


def _refuse_user_quotas(request: Request) -> None:
    """Per-user quotas are not kept; changing them must not change the project's."""
    if "user_id" in request.query_params:
        raise BadRequest("Per-user quotas (user_id) are not supported; set the project's.")


@routes.get("/v2.1/os-quota-sets/{project_id}")
async def show_quotas(request: Request) -> Response:
    enforce(request, "read", _target(request))
    project = request.path_params["project_id"]
    limits = await service(request).quotas.limits(project)
    return JSONResponse({"quota_set": {"id": project, **_legacy(request), **limits}})


@routes.get("/v2.1/os-quota-sets/{project_id}/defaults")
async def show_defaults(request: Request) -> Response:
    enforce(request, "read", _target(request))
    project = request.path_params["project_id"]
    defaults = dict(service(request).quotas.defaults)
    return JSONResponse({"quota_set": {"id": project, **_legacy(request), **defaults}})


@routes.get("/v2.1/os-quota-sets/{project_id}/detail")
async def show_detail(request: Request) -> Response:
    enforce(request, "read", _target(request))
    project = request.path_params["project_id"]
    usage = await service(request).quotas.usage(project)
    legacy = {
        name: {"limit": limit, "in_use": 0, "reserved": 0}
        for name, limit in _legacy(request).items()
    }
    return JSONResponse({"quota_set": {"id": project, **legacy, **usage}})


@routes.put("/v2.1/os-quota-sets/{project_id}")
async def update_quotas(request: Request) -> Response:
    enforce(request, "manage_quotas", _target(request))
    _refuse_user_quotas(request)
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


@routes.delete("/v2.1/os-quota-sets/{project_id}")
async def reset_quotas(request: Request) -> Response:
    enforce(request, "manage_quotas", _target(request))
    _refuse_user_quotas(request)
    await service(request).quotas.reset_limits(request.path_params["project_id"])
    return Response(status_code=202)
