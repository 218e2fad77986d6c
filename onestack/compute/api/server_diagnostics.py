"""``GET /servers/{id}/diagnostics`` (admin): the guest's counters from its driver, in
Nova's standard form from 2.48 and as flat ``cpu0_time``/``vda_read``… keys before."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute import vm_states
from onestack.compute.api.common import at_least, enforce, own, service
from onestack.compute.api.lookups import find_server
from onestack.compute.api.server_actions import payload_of
from onestack.compute.api.server_password import guest_call_error
from onestack.core.asgi.errors import Conflict
from onestack.core.asgi.routing import RouteTable
from onestack.core.bus.base import BusError

routes = RouteTable()

UNSUPPORTED = "Unable to get diagnostics, functionality not implemented"
DIAGNOSTICS_TIMEOUT = 30.0


def standard_view(found: dict[str, Any]) -> dict[str, Any]:
    """The 2.48 form: fixed keys, the same for every driver."""
    disks = [{k: v for k, v in disk.items() if k != "id"} for disk in found["disk_details"]]
    return {
        "state": found["state"],
        "driver": found["driver"],
        "hypervisor": found["hypervisor"],
        "hypervisor_os": found["hypervisor_os"],
        "uptime": found["uptime"],
        "config_drive": found["config_drive"],
        "num_cpus": len(found["cpu_details"]),
        "num_nics": len(found["nic_details"]),
        "num_disks": len(disks),
        "memory_details": found["memory_details"],
        "cpu_details": found["cpu_details"],
        "nic_details": found["nic_details"],
        "disk_details": disks,
    }


def legacy_view(found: dict[str, Any]) -> dict[str, Any]:
    """Before 2.48: the driver's flat counters, named as libvirt's were."""
    view: dict[str, Any] = {"memory": found["memory_details"]["maximum"] * 1024}
    for cpu in found["cpu_details"]:
        view[f"cpu{cpu['id']}_time"] = cpu["time"]
    for disk in found["disk_details"]:
        name = disk["id"]
        view.update({f"{name}_read": disk["read_bytes"], f"{name}_read_req": disk["read_requests"],
                     f"{name}_write": disk["write_bytes"],
                     f"{name}_write_req": disk["write_requests"],
                     f"{name}_errors": disk["errors_count"]})  # fmt: skip
    for index, nic in enumerate(found["nic_details"]):
        for key in ("rx", "tx"):
            view[f"nic{index}_{key}"] = nic[f"{key}_octets"]
            for counter in ("packets", "errors", "drop"):
                view[f"nic{index}_{key}_{counter}"] = nic[f"{key}_{counter}"]
    return view


@routes.get("/v2.1/servers/{server_id}/diagnostics")
async def show_diagnostics(request: Request) -> Response:
    enforce(request, "admin", own(request))
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
    if not server.host or server.vm_state in (vm_states.BUILDING, vm_states.SHELVED_OFFLOADED):
        raise Conflict(f"Cannot 'get_diagnostics' instance {server.uuid} while it is in "
                       f"vm_state {server.vm_state}")  # fmt: skip
    try:
        found = await service(request).agents.call(
            server.host, "diagnostics", timeout=DIAGNOSTICS_TIMEOUT,
            instance=await payload_of(request, server),
        )  # fmt: skip
    except BusError as exc:
        raise guest_call_error(exc, UNSUPPORTED) from None
    view = standard_view(found) if at_least(request, "2.48") else legacy_view(found)
    return JSONResponse(view)
