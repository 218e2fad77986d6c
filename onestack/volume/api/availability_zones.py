"""``/v3/os-availability-zone``: the zones of the reporting backends."""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import enforce, own, service
from onestack.volume.models import Backend
from onestack.volume.scheduler.manager import VOLUME_BINARY

routes = RouteTable()


@routes.get("/v3/os-availability-zone")
async def list_zones(request: Request) -> Response:
    enforce(request, "read", own(request))
    volume = service(request)
    async with volume.db.session() as session:
        backends = list((await session.execute(select(Backend))).scalars())
    alive = {r.host for r in await volume.services.list(binary=VOLUME_BINARY) if r.up}
    zones: dict[str, bool] = {}
    for backend in backends:
        zones[backend.availability_zone] = (
            zones.get(backend.availability_zone, False) or backend.host in alive
        )
    return JSONResponse(
        {
            "availabilityZoneInfo": [
                {"zoneName": name, "zoneState": {"available": up}}
                for name, up in sorted(zones.items())
            ]
        }
    )
