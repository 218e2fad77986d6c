"""``POST /servers/{id}/action``: power and lifecycle actions, resize and moves, snapshots,
shelve, rescue, admin resets and console output, each checked against the server's state
(409 with the state otherwise) and recorded as an instance action."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute import vm_states
from onestack.compute.actions import open_action
from onestack.compute.api import volume_backed
from onestack.compute.api.common import (
    as_int,
    at_least,
    caller,
    enforce,
    is_admin,
    service,
)
from onestack.compute.api.lookups import (
    check_state,
    check_unlocked,
    extra_specs_of,
    find_server,
    usable_flavor,
)
from onestack.compute.api.remote import as_caller, image_of
from onestack.compute.api.servers import check_metadata_quota, render
from onestack.compute.conductor import quota_deltas
from onestack.compute.host_states import COMPUTE_BINARY
from onestack.compute.models import Instance, InstanceMetadata
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.compute.payloads import instance_payload
from onestack.compute.views import embedded_flavor
from onestack.core.asgi.errors import APIError, BadRequest, Conflict, Forbidden, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable, service_root
from onestack.core.bus.base import BusError
from onestack.core.quota import QuotaExceeded

routes = RouteTable()

A = vm_states
RUNNING_STATES = (A.ACTIVE, A.STOPPED, A.PAUSED, A.SUSPENDED)

Handler = Callable[[Request, Instance, Any], Awaitable[Response]]
HANDLERS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        return handler

    return register


def request_id(request: Request) -> str:
    found: str = request.scope["state"].get("request_id") or f"req-{uuid.uuid4()}"
    return found


async def begin(
    request: Request,
    server: Instance,
    name: str,
    task_state: str | None,
    *,
    record: str | None = None,
    **values: Any,
) -> str:
    """Set the task state (only if the server is unchanged since it was read) and record
    the instance action; returns the request id the steps are recorded under."""
    rid = request_id(request)
    context = caller(request)
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        if row.task_state != server.task_state or row.vm_state != server.vm_state:
            raise Conflict(f"Cannot '{name}' instance {server.uuid} while it is in task_state "
                           f"{row.task_state}")  # fmt: skip
        row.task_state = task_state
        meta = dict(row.system_metadata or {})
        meta["pre_action_state"] = row.vm_state
        row.system_metadata = meta
        for key, value in values.items():
            setattr(row, key, value)
        open_action(session, server.uuid, record or name, rid,
                    context.project_id or "", context.user_id or "")  # fmt: skip
    server.task_state = task_state
    return rid


async def payload_of(request: Request, server: Instance) -> dict[str, Any]:
    async with service(request).db.session() as session:
        rows = (
            await session.execute(
                select(InstanceMetadata).where(InstanceMetadata.instance_uuid == server.uuid)
            )
        ).scalars()
        metadata = {row.key: row.value for row in rows}
    return instance_payload(server, metadata)


async def to_agent(
    request: Request,
    server: Instance,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    record: str | None = None,
    task: str | None = None,
) -> Response:
    """Hand a simple action to the server's agent; 202."""
    if not server.host:
        raise Conflict(f"Cannot '{name}' instance {server.uuid}: it is on no host")
    rid = await begin(request, server, record or name, task or A.TASK_OF.get(name))
    await service(request).agents.cast(
        server.host,
        "run_action",
        instance=await payload_of(request, server),
        action=name,
        request_id=rid,
        args=args or {},
    )
    return Response(status_code=202)


@routes.post("/v2.1/servers/{server_id}/action")
async def server_action(request: Request) -> Response:
    data = await json_body(request)
    if not isinstance(data, dict) or len(data) != 1:
        raise BadRequest("Exactly one server action is expected in the request body.")
    ((name, args),) = data.items()
    handler = HANDLERS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
    if name not in ("unlock", "os-resetState", "os-getConsoleOutput", "lock"):
        check_unlocked(request, server)
    return await handler(request, server, args)


# ----- power ---------------------------------------------------------------------------


@action("reboot")
async def reboot(request: Request, server: Instance, args: Any) -> Response:
    kind = str((args or {}).get("type", "")).upper() if isinstance(args, dict) else ""
    if kind not in ("SOFT", "HARD"):
        raise BadRequest("Invalid input for field/attribute type.")
    hard = kind == "HARD"
    if hard:
        check_state(server, "reboot", (A.ACTIVE, A.STOPPED, A.PAUSED, A.SUSPENDED, A.ERROR),
                    (None, "rebooting", "rebooting_hard"))  # fmt: skip
    else:
        check_state(server, "reboot", (A.ACTIVE,))
    task = "rebooting_hard" if hard else "rebooting"
    return await to_agent(request, server, "reboot", {"hard": hard}, task=task)


@action("os-stop")
async def stop(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "stop", (A.ACTIVE, A.ERROR, A.RESCUED))
    return await to_agent(request, server, "stop")


@action("os-start")
async def start(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "start", (A.STOPPED,))
    return await to_agent(request, server, "start")


def simple(name: str, agent_action: str, states: tuple[str, ...]) -> Handler:
    async def handler(request: Request, server: Instance, args: Any) -> Response:
        check_state(server, name, states)
        return await to_agent(request, server, agent_action)

    return handler


action("pause")(simple("pause", "pause", (A.ACTIVE,)))
action("unpause")(simple("unpause", "unpause", (A.PAUSED,)))
action("suspend")(simple("suspend", "suspend", (A.ACTIVE,)))
action("resume")(simple("resume", "resume", (A.SUSPENDED,)))
action("unrescue")(simple("unrescue", "unrescue", (A.RESCUED,)))


@action("rescue")
async def rescue(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "rescue", (A.ACTIVE, A.STOPPED, A.ERROR))
    args = args if isinstance(args, dict) else {}
    image = args.get("rescue_image_ref") or server.image_ref
    if args.get("rescue_image_ref"):
        await image_of(request, str(args["rescue_image_ref"]))
    await to_agent(request, server, "rescue", {"image_id": image})
    body = {"adminPass": args.get("adminPass") or uuid.uuid4().hex[:12]}
    return JSONResponse(body if not at_least(request, "2.14") else {})


# ----- locks and admin state --------------------------------------------------------------


@action("lock")
async def lock(request: Request, server: Instance, args: Any) -> Response:
    reason = args.get("locked_reason") if isinstance(args, dict) else None
    if reason is not None and not at_least(request, "2.73"):
        raise BadRequest("locked_reason is not supported before microversion 2.73")
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        row.locked = True
        row.locked_by = "admin" if is_admin(request) else "owner"
        row.locked_reason = reason
        context = caller(request)
        open_action(session, server.uuid, "lock", request_id(request),
                    context.project_id or "", context.user_id or "")  # fmt: skip
    return Response(status_code=202)


@action("unlock")
async def unlock(request: Request, server: Instance, args: Any) -> Response:
    if server.locked_by == "admin" and not is_admin(request):
        raise Forbidden("Policy doesn't allow the owner to unlock an instance an admin locked.")
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        row.locked, row.locked_by, row.locked_reason = False, None, None
        context = caller(request)
        open_action(session, server.uuid, "unlock", request_id(request),
                    context.project_id or "", context.user_id or "")  # fmt: skip
    return Response(status_code=202)


@action("os-resetState")
async def reset_state(request: Request, server: Instance, args: Any) -> Response:
    enforce(request, "admin")
    state = args.get("state") if isinstance(args, dict) else None
    if state not in ("active", "error"):
        raise BadRequest("Invalid input for field/attribute state.")
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        row.vm_state = state
        row.task_state = None
        context = caller(request)
        open_action(session, server.uuid, "resetState", request_id(request),
                    context.project_id or "", context.user_id or "")  # fmt: skip
    return Response(status_code=202)


# ----- images ------------------------------------------------------------------------------


async def _snapshot_image(
    request: Request,
    server: Instance,
    name: str,
    extra: dict[str, str],
    kind: str,
    disk_format: str = "qcow2",
) -> str:
    """Create the queued image a snapshot will fill, owned by the server's project."""
    body: dict[str, Any] = {
        "name": name,
        "disk_format": disk_format,
        "container_format": "bare",
        "visibility": "private",
        "image_type": kind,
        "instance_uuid": server.uuid,
        "base_image_ref": server.image_ref or "",
        **{k: v for k, v in ((server.image_meta or {}).get("properties") or {}).items()
           if str(k).startswith("hw_")},
        **extra,
    }  # fmt: skip
    response = await as_caller(request, "image", "POST", "/v2/images", json=body)
    if response.status_code == 413 or response.status_code == 403:
        raise Forbidden(f"Quota exceeded for images: {response.text[:200]}")
    if response.status_code != 201:
        raise APIError(f"The image service refused the snapshot: {response.text[:200]}",
                       status=400 if response.status_code < 500 else 503)  # fmt: skip
    image_id: str = response.json()["id"]
    return image_id


@action("createImage")
async def create_image(request: Request, server: Instance, args: Any) -> Response:
    if not isinstance(args, dict) or not isinstance(args.get("name"), str) or not args["name"]:
        raise BadRequest("Invalid input for field/attribute name.")
    metadata = args.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadRequest("Invalid input for field/attribute metadata.")
    check_state(server, "createImage", RUNNING_STATES)
    properties = {str(k): str(v) for k, v in metadata.items()}
    mappings = await volume_backed.mappings_of(request, server)
    if volume_backed.is_volume_backed(server, mappings):
        image_id = await _volume_backed_image(request, server, args["name"], properties, mappings)
    else:
        if not server.host:
            raise Conflict(f"Cannot 'createImage' instance {server.uuid}: it is on no host")
        image_id = await _snapshot_image(request, server, args["name"], properties, "snapshot")
        rid = await begin(request, server, "createImage", A.TASK_OF["snapshot"])
        await service(request).agents.cast(
            server.host, "run_action", instance=await payload_of(request, server),
            action="snapshot", request_id=rid, args={"image_id": image_id},
        )  # fmt: skip
    location = f"{await service(request).client.endpoint('image')}/v2/images/{image_id}"
    if at_least(request, "2.45"):
        return JSONResponse({"image_id": image_id}, status_code=202, headers={"Location": location})
    return Response(status_code=202, headers={"Location": location})


async def _volume_backed_image(
    request: Request,
    server: Instance,
    name: str,
    properties: dict[str, str],
    mappings: list[BlockDeviceMapping],
) -> str:
    """createImage of a volume-backed server, done in the API as Nova does: snapshot its
    volumes, then an active image with no data that maps them; on failure the snapshots go."""
    snapshots = volume_backed.VolumeSnapshots(request)
    try:
        mapping = await snapshots.take(mappings, name)
        image_id = await _snapshot_image(
            request, server, name, {**properties, **volume_backed.image_properties(mapping)},
            "snapshot", disk_format="raw",
        )  # fmt: skip
        await volume_backed.activate_empty(request, image_id)
    except BaseException:
        await snapshots.remove()
        raise
    context = caller(request)
    async with service(request).db.session() as session:
        open_action(session, server.uuid, "createImage", request_id(request),
                    context.project_id or "", context.user_id or "")  # fmt: skip
    return image_id


@action("shelve")
async def shelve(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "shelve", RUNNING_STATES)
    if not server.host:
        raise Conflict(f"Cannot 'shelve' instance {server.uuid}: it is on no host")
    image_id = await _snapshot_image(
        request, server, f"{server.display_name}-shelved", {}, "snapshot"
    )
    meta = {**(server.system_metadata or {}), "shelved_image_id": image_id}
    rid = await begin(request, server, "shelve", A.TASK_OF["shelve"])
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        row.system_metadata = {**meta, **{"pre_action_state": server.vm_state}}
    await service(request).agents.cast(
        server.host, "run_action", instance=await payload_of(request, server),
        action="shelve", request_id=rid, args={"image_id": image_id},
    )  # fmt: skip
    return Response(status_code=202)


@action("shelveOffload")
async def shelve_offload(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "shelveOffload", ("shelved",))
    return Response(status_code=202)


@action("unshelve")
async def unshelve(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "unshelve", (A.SHELVED_OFFLOADED,))
    rid = await begin(request, server, "unshelve", A.TASK_OF["unshelve"])
    await service(request).conductor.cast("unshelve", uuid=server.uuid, request_id=rid)
    return Response(status_code=202)


@action("rebuild")
async def rebuild(request: Request, server: Instance, args: Any) -> Response:
    if not isinstance(args, dict) or not args.get("imageRef"):
        raise BadRequest("Invalid input for field/attribute imageRef.")
    check_state(server, "rebuild", (A.ACTIVE, A.STOPPED, A.ERROR))
    image_ref = str(args["imageRef"]).rstrip("/").rsplit("/", 1)[-1]
    image = await image_of(request, image_ref)
    flavor = server.flavor
    size = image.get("size") or 0
    if flavor["disk"] and size > int(flavor["disk"]) * (1 << 30):
        raise BadRequest("Flavor's disk is too small for requested image.")
    values: dict[str, Any] = {"image_ref": image_ref}
    if isinstance(args.get("name"), str) and args["name"].strip():
        values["display_name"] = args["name"]
    if "description" in args and at_least(request, "2.19"):
        values["display_description"] = args["description"]
    if "metadata" in args:
        metadata = args["metadata"]
        if not isinstance(metadata, dict):
            raise BadRequest("Invalid input for field/attribute metadata.")
        await check_metadata_quota(request, server.project_id, len(metadata))
        async with service(request).db.session() as session:
            await session.execute(
                InstanceMetadata.__table__.delete().where(  # type: ignore[attr-defined]
                    InstanceMetadata.instance_uuid == server.uuid
                )
            )
            for key, value in metadata.items():
                session.add(InstanceMetadata(instance_uuid=server.uuid, key=str(key),
                                             value=str(value)))  # fmt: skip
    if not server.host:
        raise Conflict(f"Cannot 'rebuild' instance {server.uuid}: it is on no host")
    rid = await begin(request, server, "rebuild", A.TASK_OF["rebuild"], **values)
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        await service(request).agents.cast(
            server.host, "run_action", instance=await payload_of(request, row),
            action="rebuild", request_id=rid, args={},
        )  # fmt: skip
        (view,) = await render(request, session, [row])
    view["adminPass"] = args.get("adminPass") or uuid.uuid4().hex[:12]
    return JSONResponse({"server": view}, status_code=202)


# ----- resize and moves -----------------------------------------------------------------


@action("resize")
async def resize(request: Request, server: Instance, args: Any) -> Response:
    if not isinstance(args, dict) or "flavorRef" not in args:
        raise BadRequest("Invalid input for field/attribute flavorRef.")
    check_state(server, "resize", (A.ACTIVE, A.STOPPED))
    compute = service(request)
    async with compute.db.session() as session:
        flavor = await usable_flavor(request, session, args["flavorRef"])
        specs = await extra_specs_of(session, flavor)
    if flavor.flavorid == server.flavor["original_id"]:
        raise BadRequest("When resizing, instances must change flavor!")
    if flavor.root_gb < int(server.flavor["disk"]) and flavor.root_gb != 0:
        raise BadRequest("Resizing to a smaller disk flavor is not allowed.")
    new = embedded_flavor(flavor, specs)
    grow = {k: v - quota_deltas(server.flavor)[k] for k, v in quota_deltas(new).items()}
    grow.pop("instances")
    try:
        reservation = await compute.quotas.reserve(
            server.project_id, {k: v for k, v in grow.items() if v > 0}
        )
    except QuotaExceeded as exc:
        raise Forbidden(str(exc)) from None
    try:
        rid = await begin(request, server, "resize", A.RESIZE_PREP)
    except BaseException:
        await compute.quotas.rollback(reservation)
        raise
    await compute.quotas.commit(reservation)
    await compute.conductor.cast("migrate_server", uuid=server.uuid, request_id=rid, flavor=new)
    return Response(status_code=202)


@action("confirmResize")
async def confirm_resize(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "confirmResize", (A.RESIZED,))
    rid = await begin(request, server, "confirmResize", None)
    await service(request).conductor.cast("confirm_resize", uuid=server.uuid, request_id=rid)
    return Response(status_code=204)


@action("revertResize")
async def revert_resize(request: Request, server: Instance, args: Any) -> Response:
    check_state(server, "revertResize", (A.RESIZED,))
    rid = await begin(request, server, "revertResize", "resize_reverting")
    await service(request).conductor.cast("revert_resize", uuid=server.uuid, request_id=rid)
    return Response(status_code=202)


async def _host_arg(request: Request, args: Any, min_version: str | None = None) -> str | None:
    host = args.get("host") if isinstance(args, dict) else None
    if host is None:
        return None
    if min_version and not at_least(request, min_version):
        raise BadRequest(f"host is not supported before microversion {min_version}")
    records = await service(request).services.list(binary=COMPUTE_BINARY, host=str(host))
    if not records:
        raise BadRequest(f"Compute host {host} could not be found.")
    return str(host)


@action("migrate")
async def migrate(request: Request, server: Instance, args: Any) -> Response:
    enforce(request, "admin")
    check_state(server, "migrate", (A.ACTIVE, A.STOPPED))
    host = await _host_arg(request, args, "2.56")
    if host is not None and host == server.host:
        raise BadRequest(f"The target host can't be the same one ({host}).")
    rid = await begin(request, server, "migrate", A.RESIZE_PREP)
    await service(request).conductor.cast(
        "migrate_server", uuid=server.uuid, request_id=rid, host=host
    )
    return Response(status_code=202)


@action("os-migrateLive")
async def live_migrate(request: Request, server: Instance, args: Any) -> Response:
    enforce(request, "admin")
    if not isinstance(args, dict) or "host" not in args:
        raise BadRequest("Invalid input for field/attribute host.")
    check_state(server, "os-migrateLive", (A.ACTIVE, A.PAUSED))
    host = await _host_arg(request, args)
    if host is not None and host == server.host:
        raise BadRequest(f"The target host can't be the same one ({host}).")
    rid = await begin(request, server, "live-migration", A.MIGRATING)
    await service(request).conductor.cast(
        "live_migrate", uuid=server.uuid, request_id=rid, host=host
    )
    return Response(status_code=202)


@action("evacuate")
async def evacuate(request: Request, server: Instance, args: Any) -> Response:
    enforce(request, "admin")
    check_state(server, "evacuate", (A.ACTIVE, A.STOPPED, A.ERROR))
    host = await _host_arg(request, args)
    if not server.host:
        raise Conflict(f"Cannot 'evacuate' instance {server.uuid}: it is on no host")
    records = await service(request).services.list(binary=COMPUTE_BINARY, host=server.host)
    if records and records[0].up:
        raise BadRequest(f"Compute service of {server.host} is still in use.")
    rid = await begin(request, server, "evacuate", "rebuilding")
    await service(request).conductor.cast("evacuate", uuid=server.uuid, request_id=rid, host=host)
    if at_least(request, "2.14"):
        return Response(status_code=200)
    password = (args or {}).get("adminPass") if isinstance(args, dict) else None
    return JSONResponse({"adminPass": password or uuid.uuid4().hex[:12]})


# ----- consoles ----------------------------------------------------------------------------


async def _agent_call(request: Request, server: Instance, method: str, **kwargs: Any) -> Any:
    if not server.host or server.vm_state in (A.BUILDING, A.SHELVED_OFFLOADED):
        raise Conflict(f"Instance {server.uuid} is not ready (vm_state {server.vm_state})")
    try:
        return await service(request).agents.call(
            server.host, method, timeout=30.0, instance=await payload_of(request, server), **kwargs
        )
    except BusError as exc:
        raise Conflict(f"The compute host of {server.uuid} could not answer: {exc}") from None


@action("os-getConsoleOutput")
async def console_output(request: Request, server: Instance, args: Any) -> Response:
    length = (args or {}).get("length") if isinstance(args, dict) else None
    lines = None
    if length not in (None, "", -1, "-1"):
        lines = as_int(length, "length", minimum=0)
    output = await _agent_call(request, server, "console_output", length=lines)
    return JSONResponse({"output": output})


async def console_url(request: Request, server: Instance, protocol: str, kind: str) -> str:
    """A console URL at this service's ``/novnc`` path with a short-lived token."""
    if protocol != "vnc" or kind != "novnc":
        raise BadRequest(f"Unsupported console type {protocol}/{kind}.")
    check_state(server, "get console", (A.ACTIVE, A.PAUSED, A.RESCUED),
                (None, "rebooting", "rebooting_hard"))  # fmt: skip
    address = await _agent_call(request, server, "vnc_address")
    token = service(request).consoles.issue(server.uuid, str(address[0]), int(address[1]))
    return f"{service_root(request)}/novnc/vnc_lite.html?token={token}"


@action("os-getVNCConsole")
async def legacy_vnc(request: Request, server: Instance, args: Any) -> Response:
    kind = (args or {}).get("type", "novnc") if isinstance(args, dict) else "novnc"
    url = await console_url(request, server, "vnc", str(kind))
    return JSONResponse({"console": {"type": kind, "url": url}})


@routes.post("/v2.1/servers/{server_id}/remote-consoles")
async def remote_console(request: Request) -> Response:
    if not at_least(request, "2.6"):
        raise NotFound("The resource could not be found.")
    data = await json_body(request)
    console = data.get("remote_console") if isinstance(data, dict) else None
    if not isinstance(console, dict):
        raise BadRequest("Invalid input for field/attribute remote_console.")
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
    protocol, kind = str(console.get("protocol", "")), str(console.get("type", ""))
    url = await console_url(request, server, protocol, kind)
    return JSONResponse({"remote_console": {"protocol": protocol, "type": kind, "url": url}})
