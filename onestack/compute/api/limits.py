"""``GET /limits``: the caller's absolute limits and usage (``openstack limits show
--absolute``); an admin may ask for another project with ``?tenant_id=``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import at_least, caller, enforce, is_admin, service
from onestack.core.asgi.errors import Forbidden
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()

LIMIT_NAMES = {
    "instances": "maxTotalInstances",
    "cores": "maxTotalCores",
    "ram": "maxTotalRAMSize",
    "key_pairs": "maxTotalKeypairs",
    "metadata_items": "maxServerMeta",
    "server_groups": "maxServerGroups",
    "server_group_members": "maxServerGroupMembers",
}
USED_NAMES = {
    "instances": "totalInstancesUsed",
    "cores": "totalCoresUsed",
    "ram": "totalRAMUsed",
    "server_groups": "totalServerGroupsUsed",
}


@routes.get("/v2.1/limits")
async def show_limits(request: Request) -> Response:
    context = caller(request)
    project = context.project_id or ""
    requested = request.query_params.get("tenant_id")
    if requested and requested != project:
        if not is_admin(request):
            raise Forbidden("Only administrators can see another project's limits.")
        project = requested
    enforce(request, "read", {"project_id": project})
    usage = await service(request).quotas.usage(project)
    absolute: dict[str, int] = {}
    for resource, name in LIMIT_NAMES.items():
        if resource in usage:
            absolute[name] = usage[resource]["limit"]
    for resource, name in USED_NAMES.items():
        if resource in usage:
            absolute[name] = usage[resource]["in_use"]
    if not at_least(request, "2.39"):
        absolute["maxImageMeta"] = absolute.get("maxServerMeta", 128)
    if not at_least(request, "2.57"):
        absolute.update({"maxPersonality": 5, "maxPersonalitySize": 10240})
    if not at_least(request, "2.36"):
        absolute.update(
            {
                "maxSecurityGroups": -1,
                "maxSecurityGroupRules": -1,
                "maxTotalFloatingIps": -1,
                "totalSecurityGroupsUsed": 0,
                "totalFloatingIpsUsed": 0,
            }
        )
    return JSONResponse({"limits": {"rate": [], "absolute": absolute}})
