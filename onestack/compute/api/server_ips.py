"""``/servers/{id}/ips`` and ``/ips/{network_label}``: a server's addresses by network
label, fixed and floating, as ``{version, addr}`` pairs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import service
from onestack.compute.api.lookups import find_server
from onestack.compute.api.remote import floating_ips
from onestack.compute.views import addresses
from onestack.core.asgi.errors import NotFound
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()


async def _addresses(request: Request) -> dict[str, list[dict[str, Any]]]:
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
    ports = list(server.ports or [])
    floating = await floating_ips(request, [p["port_id"] for p in ports])
    return {
        label: [{"version": entry["version"], "addr": entry["addr"]} for entry in entries]
        for label, entries in addresses(ports, floating).items()
    }


@routes.get("/v2.1/servers/{server_id}/ips")
async def list_ips(request: Request) -> Response:
    return JSONResponse({"addresses": await _addresses(request)})


@routes.get("/v2.1/servers/{server_id}/ips/{network_label}")
async def show_ips(request: Request) -> Response:
    label = request.path_params["network_label"]
    found = await _addresses(request)
    if label not in found:
        raise NotFound("There is no such network label in this server.")
    return JSONResponse({label: found[label]})
