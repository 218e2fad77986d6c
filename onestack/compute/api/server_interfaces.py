"""``/servers/{id}/os-interface``: a server's ports (list, show) and NIC hot-plug.

Attach takes a network (``net_id``, optionally one of ``fixed_ips``), an existing free port
(``port_id``) or neither (the one network the project could use). A port for a network is
created here with the caller's token, so the network's visibility and the project's port
quota hold; the server's agent then binds it to its host and plugs it into the guest
(a call: the answer comes once the guest has the NIC, as Nova's attach). When the agent
fails, the port is deleted again (or unbound, when the user brought it) and the server's
records stay as they were. Detach unplugs the NIC and deletes the port compute created.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute import vm_states
from onestack.compute.actions import open_action
from onestack.compute.api.common import at_least, body_of, caller, service
from onestack.compute.api.lookups import check_state, check_unlocked, find_server
from onestack.compute.api.remote import as_caller, network_call, usable_networks
from onestack.compute.api.server_actions import payload_of, request_id
from onestack.compute.models import Instance
from onestack.compute.ports import PortBinder
from onestack.core.asgi.errors import APIError, BadRequest, Conflict, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.bus.base import BusError, RemoteError

routes = RouteTable()

# Nova attaches and detaches NICs of running, paused and stopped servers only.
HOTPLUG_STATES = (vm_states.ACTIVE, vm_states.PAUSED, vm_states.STOPPED)
# The agent waits on the hypervisor (QMP device_add / device_del and the guest's answer).
HOTPLUG_TIMEOUT = 120.0


def attachment_view(request: Request, port: dict[str, Any], tag: str | None) -> dict[str, Any]:
    """A port as ``interfaceAttachment`` (``tag`` from 2.70)."""
    view: dict[str, Any] = {
        "net_id": port["network_id"],
        "port_id": port["id"],
        "mac_addr": port["mac_address"],
        "port_state": port.get("status", "DOWN"),
        "fixed_ips": [
            {"subnet_id": ip["subnet_id"], "ip_address": ip["ip_address"]}
            for ip in port.get("fixed_ips", [])
        ],
    }
    if at_least(request, "2.70"):
        view["tag"] = tag
    return view


def _tags(server: Instance) -> dict[str, str | None]:
    return {record["port_id"]: record.get("tag") for record in server.ports or []}


async def _server(request: Request, rule: str = "read") -> Instance:
    async with service(request).db.session() as session:
        return await find_server(request, session, request.path_params["server_id"], rule)


@routes.get("/v2.1/servers/{server_id}/os-interface")
async def list_interfaces(request: Request) -> Response:
    server = await _server(request)
    ports = await network_call(request, "GET", "/v2.0/ports", params={"device_id": server.uuid})
    tags = _tags(server)
    return JSONResponse(
        {
            "interfaceAttachments": [
                attachment_view(request, port, tags.get(port["id"])) for port in ports["ports"]
            ]
        }
    )


async def _port_of_server(request: Request, server: Instance, port_id: str) -> dict[str, Any]:
    response = await as_caller(request, "network", "GET", f"/v2.0/ports/{port_id}")
    port: dict[str, Any] = response.json().get("port", {}) if response.status_code == 200 else {}
    if port.get("device_id") != server.uuid:
        raise NotFound(f"Instance {server.uuid} does not have a port with id {port_id}")
    return port


@routes.get("/v2.1/servers/{server_id}/os-interface/{port_id}")
async def show_interface(request: Request) -> Response:
    server = await _server(request)
    port = await _port_of_server(request, server, request.path_params["port_id"])
    view = attachment_view(request, port, _tags(server).get(port["id"]))
    return JSONResponse({"interfaceAttachment": view})


def _attach_request(request: Request, data: Any) -> tuple[str | None, str | None, str | None, Any]:
    """(net_id, port_id, requested IP, tag) of an attach body; 400 when contradictory."""
    if data in (None, {}):
        return None, None, None, None
    body = body_of(data, "interfaceAttachment")
    allowed = {"net_id", "port_id", "fixed_ips"} | ({"tag"} if at_least(request, "2.49") else set())
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"Additional properties are not allowed ({sorted(unknown)[0]!r} "
                         "was unexpected)")  # fmt: skip
    net_id, port_id, tag = body.get("net_id"), body.get("port_id"), body.get("tag")
    for name, value in (("net_id", net_id), ("port_id", port_id), ("tag", tag)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 60):
            raise BadRequest(f"Invalid input for field/attribute {name}.")
    fixed_ips = body.get("fixed_ips")
    address = None
    if fixed_ips is not None:
        if not isinstance(fixed_ips, list) or len(fixed_ips) != 1 or not isinstance(
            fixed_ips[0], dict
        ) or not isinstance(fixed_ips[0].get("ip_address"), str):  # fmt: skip
            raise BadRequest("Invalid input for field/attribute fixed_ips.")
        address = fixed_ips[0]["ip_address"]
    if net_id and port_id:
        raise BadRequest("Must not input both network_id and port_id")
    if address and not net_id:
        raise BadRequest("Must input network_id when request IP address")
    return net_id, port_id, address, tag


async def _port_to_attach(
    request: Request, server: Instance, net_id: str | None, port_id: str | None, address: Any
) -> dict[str, Any]:
    """The port record to hand the agent: the user's free port, or one made here."""
    if port_id:
        response = await as_caller(request, "network", "GET", f"/v2.0/ports/{port_id}")
        if response.status_code != 200:
            raise NotFound(f"Port {port_id} could not be found.")
        port = response.json()["port"]
        if port.get("device_id"):
            raise Conflict(f"Port {port_id} is still in use.")
        return {"port_id": port_id, "created": False}
    if not net_id:
        networks = await usable_networks(request, server.project_id)
        if not networks:
            raise BadRequest("No network available to attach an interface to.")
        if len(networks) > 1:
            raise BadRequest("Multiple possible networks found, use a Network ID to be more "
                             "specific.")  # fmt: skip
        net_id = networks[0]["id"]
    response = await as_caller(request, "network", "GET", f"/v2.0/networks/{net_id}")
    if response.status_code != 200:
        raise NotFound(f"Network {net_id} could not be found.")
    body: dict[str, Any] = {"network_id": net_id, "tenant_id": server.project_id}
    if address:
        body["fixed_ips"] = [{"ip_address": address}]
    port = (await network_call(request, "POST", "/v2.0/ports", json={"port": body}))["port"]
    return {"port_id": port["id"], "created": True}


def _hotplug_host(server: Instance, action: str) -> str:
    """The host of a server whose NICs may change now; 409 otherwise."""
    check_state(server, action, HOTPLUG_STATES)
    if not server.host:
        raise Conflict(f"Cannot '{action}' instance {server.uuid}: it is on no host")
    return server.host


def _agent_failure(server: Instance, exc: BusError, what: str) -> APIError:
    """A hot-plug the agent could not do: 409 with its reason (the server is unchanged)."""
    reason = exc.message if isinstance(exc, RemoteError) else str(exc)
    return Conflict(f"Failed to {what} network adapter device to {server.uuid}: {reason}")


async def _record(request: Request, server: Instance, action: str, change: Any) -> None:
    """Apply ``change`` to the stored port records of the server and record the action."""
    context = caller(request)
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        row.ports = change(list(row.ports or []))
        open_action(session, server.uuid, action, request_id(request),
                    context.project_id or "", context.user_id or "")  # fmt: skip


@routes.post("/v2.1/servers/{server_id}/os-interface")
async def attach_interface(request: Request) -> Response:
    data = await json_body(request) if await request.body() else None
    net_id, port_id, address, tag = _attach_request(request, data)
    server = await _server(request, "write")
    check_unlocked(request, server)
    host = _hotplug_host(server, "attach_interface")
    port = await _port_to_attach(request, server, net_id, port_id, address)
    if tag:
        port["tag"] = tag
    try:
        record = await service(request).agents.call(
            host,
            "attach_interface",
            timeout=HOTPLUG_TIMEOUT,
            instance=await payload_of(request, server),
            port=port,
        )
    except BusError as exc:
        if port["created"]:
            await PortBinder(service(request).client).release([port], server.uuid)
        raise _agent_failure(server, exc, "attach") from None
    await _record(request, server, "attach_interface", lambda ports: [*ports, record])
    shown = await _port_of_server(request, server, record["port_id"])
    return JSONResponse({"interfaceAttachment": attachment_view(request, shown, tag)})


@routes.delete("/v2.1/servers/{server_id}/os-interface/{port_id}")
async def detach_interface(request: Request) -> Response:
    port_id = request.path_params["port_id"]
    server = await _server(request, "write")
    check_unlocked(request, server)
    host = _hotplug_host(server, "detach_interface")
    record = next((p for p in server.ports or [] if p["port_id"] == port_id), None)
    if record is None:
        raise NotFound(f"Port {port_id} could not be found.")
    try:
        await service(request).agents.call(
            host,
            "detach_interface",
            timeout=HOTPLUG_TIMEOUT,
            instance=await payload_of(request, server),
            port=record,
        )
    except BusError as exc:
        raise _agent_failure(server, exc, "detach") from None
    await _record(request, server, "detach_interface",
                  lambda ports: [p for p in ports if p["port_id"] != port_id])  # fmt: skip
    return Response(status_code=202)
