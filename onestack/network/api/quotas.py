"""``/v2.0/quotas``: per-project limits, and usage with ``/details``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network.api.common import body_of, caller, enforce, service

routes = RouteTable()


def _project(request: Request) -> str:
    project_id: str = request.path_params["project_id"]
    context = caller(request)
    if project_id != context.project_id:
        enforce(request, "quota_update")
    else:
        enforce(request, "read")
    return project_id


@routes.get("/v2.0/quotas/{project_id}")
async def show_quota(request: Request) -> Response:
    limits = await service(request).quotas.limits(_project(request))
    return JSONResponse({"quota": limits})


@routes.get("/v2.0/quotas/{project_id}/details")
async def show_details(request: Request) -> Response:
    usage = await service(request).quotas.usage(_project(request))
    return JSONResponse(
        {
            "quota": {
                name: {"limit": u["limit"], "used": u["in_use"], "reserved": u["reserved"]}
                for name, u in usage.items()
            }
        }
    )


@routes.put("/v2.0/quotas/{project_id}")
async def update_quota(request: Request) -> Response:
    enforce(request, "quota_update")
    body = body_of(await json_body(request), "quota")
    check_limit = body.pop("check_limit", False) is True
    body.pop("force", None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in body.values()):
        raise BadRequest("Quota limits must be integers (-1 for unlimited).")
    project_id = request.path_params["project_id"]
    quotas = service(request).quotas
    if check_limit:
        usage = await quotas.usage(project_id)
        for name, limit in body.items():
            used = usage.get(name, {}).get("in_use", 0)
            if limit != -1 and limit < used:
                raise BadRequest(
                    f"Quota limit {limit} for {name} must be equal or greater than existing "
                    f"resources ({used}).",
                    type="InvalidQuotaValue",
                )
    try:
        limits = await quotas.set_limits(project_id, body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return JSONResponse({"quota": limits})


@routes.delete("/v2.0/quotas/{project_id}")
async def reset_quota(request: Request) -> Response:
    enforce(request, "quota_update")
    await service(request).quotas.reset_limits(request.path_params["project_id"])
    return Response(status_code=204)
