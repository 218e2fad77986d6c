"""``/os-availability-zone``: the zones hosts are in (``availability zone list --compute``).

A compute host's zone is its zoned aggregate's, else the default zone; other services are
in the ``internal`` zone, which only the detailed (admin) listing shows.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import enforce, own
from onestack.compute.api.services import INTERNAL_ZONE, records_with_zones
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()


@routes.get("/v2.1/os-availability-zone")
async def list_zones(request: Request) -> Response:
    enforce(request, "read", own(request))
    available: dict[str, bool] = {}
    for _, record, zone in await records_with_zones(request):
        if zone != INTERNAL_ZONE:
            available[zone] = available.get(zone, False) or not record.disabled
    return JSONResponse(
        {
            "availabilityZoneInfo": [
                {"zoneName": zone, "zoneState": {"available": up}, "hosts": None}
                for zone, up in sorted(available.items())
            ]
        }
    )


@routes.get("/v2.1/os-availability-zone/detail")
async def list_zones_detail(request: Request) -> Response:
    enforce(request, "manage_hosts", own(request))
    zones: dict[str, dict[str, Any]] = {}
    for _, record, zone in await records_with_zones(request):
        entry = zones.setdefault(zone, {"available": False, "hosts": {}})
        entry["available"] = entry["available"] or not record.disabled
        updated = record.last_seen_at or record.created_at
        entry["hosts"].setdefault(record.host, {})[record.binary] = {
            "available": record.up,
            "active": not record.disabled,
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        }
    return JSONResponse(
        {
            "availabilityZoneInfo": [
                {
                    "zoneName": zone,
                    "zoneState": {"available": entry["available"]},
                    "hosts": entry["hosts"],
                }
                for zone, entry in sorted(zones.items())
            ]
        }
    )
