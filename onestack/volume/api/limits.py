"""``/v3/limits``: the caller's absolute limits and usage (Cinder has no rate limits)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import caller, enforce, is_admin, own, service

routes = RouteTable()

# Cinder's absolute limit names for each quota resource (maximum, used).
NAMES = {
    "volumes": ("maxTotalVolumes", "totalVolumesUsed"),
    "gigabytes": ("maxTotalVolumeGigabytes", "totalGigabytesUsed"),
    "snapshots": ("maxTotalSnapshots", "totalSnapshotsUsed"),
    "backups": ("maxTotalBackups", "totalBackupsUsed"),
    "backup_gigabytes": ("maxTotalBackupGigabytes", "totalBackupGigabytesUsed"),
}


@routes.get("/v3/limits")
async def show_limits(request: Request) -> Response:
    enforce(request, "read", own(request))
    project = caller(request).project_id or ""
    wanted = request.query_params.get("project_id")
    if wanted and is_admin(request):
        project = wanted
    await service(request).refresh_quota_defaults()
    usage = await service(request).quotas.usage(project)
    absolute = {}
    for resource, (maximum, used) in NAMES.items():
        entry = usage.get(resource, {"limit": -1, "in_use": 0})
        absolute[maximum] = entry["limit"]
        absolute[used] = entry["in_use"]
    return JSONResponse({"limits": {"rate": [], "absolute": absolute}})
