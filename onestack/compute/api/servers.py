"""``/servers``: create (validated against flavors, images, networks, key pairs, zones,
groups and quotas, then handed to the conductor), list and detail with Nova's filters,
show, update and delete."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute import vm_states
from onestack.compute.actions import open_action
from onestack.compute.api import block_device_mapping
from onestack.compute.api.common import (
    as_bool,
    as_int,
    at_least,
    body_of,
    caller,
    enforce,
    is_admin,
    limit_marker,
    own,
    service,
)
from onestack.compute.api.lookups import (
    check_unlocked,
    extra_specs_of,
    find_server,
    usable_flavor,
)
from onestack.compute.api.remote import (
    floating_ips,
    image_of,
    network_of,
    port_of,
    security_group_exists,
    usable_networks,
)
from onestack.compute.api.volume_attachments import volumes_attached
from onestack.compute.conductor import quota_deltas
from onestack.compute.models import Instance, InstanceMetadata, InstanceTag, KeyPair
from onestack.compute.models_admin import (
    Aggregate,
    AggregateMetadata,
    ServerGroup,
    ServerGroupMember,
)
from onestack.compute.payloads import instance_payload
from onestack.compute.user_quotas import UserQuotas
from onestack.compute.views import embedded_flavor, server_summary, server_view
from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable, service_root
from onestack.core.quota import QuotaExceeded

routes = RouteTable()

GIB = 1 << 30
MAX_USER_DATA = 65535
HOSTNAME_UNSAFE = re.compile(r"[^a-z0-9-]+")
STATUS_FILTER = {
    "ACTIVE": ([vm_states.ACTIVE], None),
    "BUILD": ([vm_states.BUILDING], None),
    "SHUTOFF": ([vm_states.STOPPED], None),
    "PAUSED": ([vm_states.PAUSED], None),
    "SUSPENDED": ([vm_states.SUSPENDED], None),
    "RESCUE": ([vm_states.RESCUED], None),
    "VERIFY_RESIZE": ([vm_states.RESIZED], None),
    "SHELVED_OFFLOADED": ([vm_states.SHELVED_OFFLOADED], None),
    "ERROR": ([vm_states.ERROR], None),
    "DELETED": ([vm_states.DELETED], None),
    "SOFT_DELETED": ([vm_states.SOFT_DELETED], None),
    "REBOOT": ([vm_states.ACTIVE], "rebooting"),
    "HARD_REBOOT": ([vm_states.ACTIVE], "rebooting_hard"),
    "RESIZE": ([vm_states.ACTIVE, vm_states.STOPPED], vm_states.RESIZE_PREP),
    "MIGRATING": ([vm_states.ACTIVE, vm_states.PAUSED], vm_states.MIGRATING),
}
SORT_KEYS: dict[str, Any] = {
    "created_at": Instance.created_at, "updated_at": Instance.updated_at,
    "display_name": Instance.display_name, "vm_state": Instance.vm_state,
    "task_state": Instance.task_state, "power_state": Instance.power_state,
    "host": Instance.host, "node": Instance.node, "uuid": Instance.uuid,
    "availability_zone": Instance.availability_zone, "launched_at": Instance.launched_at,
}  # fmt: skip


def hostname_of(name: str) -> str:
    """A DNS-safe hostname from a display name, as Nova sanitizes it."""
    text = HOSTNAME_UNSAFE.sub("-", name.lower().replace(" ", "-").replace("_", "-"))
    return text.strip("-.")[:63] or "server"


async def render(
    request: Request, session: AsyncSession, servers: list[Instance]
) -> list[dict[str, Any]]:
    """Full server bodies, metadata, tags and floating addresses loaded at once."""
    ids = [s.uuid for s in servers]
    metadata: dict[str, dict[str, str]] = {i: {} for i in ids}
    tags: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        for row in (
            await session.execute(
                select(InstanceMetadata).where(InstanceMetadata.instance_uuid.in_(ids))
            )
        ).scalars():
            metadata[row.instance_uuid][row.key] = row.value
        for tag_row in (
            await session.execute(select(InstanceTag).where(InstanceTag.instance_uuid.in_(ids)))
        ).scalars():
            tags[tag_row.instance_uuid].append(tag_row.tag)
    attached = await volumes_attached(request, session, ids)
    floating = await floating_ips(request, [p["port_id"] for s in servers for p in s.ports or []])
    views = []
    admin = is_admin(request)
    for server in servers:
        view = server_view(
            request,
            server,
            metadata[server.uuid],
            sorted(tags[server.uuid]),
            floating=floating,
            admin=admin,
        )
        view["os-extended-volumes:volumes_attached"] = attached[server.uuid]
        views.append(view)
    return views


# ----- list ----------------------------------------------------------------------------


def _time_param(value: str, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid filter field: {name}.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _filtered(request: Request) -> Select[Any]:
    params = request.query_params
    admin = is_admin(request)
    context = caller(request)
    query = select(Instance)
    all_tenants = "all_tenants" in params and (
        params["all_tenants"] == "" or as_bool(params["all_tenants"], "all_tenants")
    )
    if admin and (all_tenants or "project_id" in params or "tenant_id" in params):
        project = params.get("project_id") or params.get("tenant_id")
        if project:
            query = query.where(Instance.project_id == project)
    else:
        query = query.where(Instance.project_id == context.project_id)
    if "changes-since" in params:
        since = _time_param(params["changes-since"], "changes-since")
        query = query.where(Instance.updated_at >= since)
    elif "changes-before" in params:
        query = query.where(
            Instance.updated_at <= _time_param(params["changes-before"], "changes-before")
        )
    else:
        deleted = admin and params.get("deleted", "").lower() in ("true", "1")
        query = query.where(Instance.deleted.is_(deleted))
        # As Nova: soft-deleted servers are listed only when their status is asked for.
        if "SOFT_DELETED" not in [s.upper() for s in params.getlist("status")]:
            query = query.where(Instance.vm_state != vm_states.SOFT_DELETED)
    if "status" in params:
        statuses = [s.upper() for s in params.getlist("status")]
        clauses = []
        for status in statuses:
            if status not in STATUS_FILTER:
                if at_least(request, "2.38"):
                    raise BadRequest(f"Invalid status value: {status}")
                continue
            states, task = STATUS_FILTER[status]
            clause: ColumnElement[bool] = Instance.vm_state.in_(states)
            if task is not None:
                clause = and_(clause, Instance.task_state == task)
            clauses.append(clause)
        query = query.where(or_(*clauses)) if clauses else query.where(false())
    if "image" in params:
        query = query.where(Instance.image_ref == params["image"].rsplit("/", 1)[-1])
    if "flavor" in params:
        wanted = params["flavor"].rsplit("/", 1)[-1]
        query = query.where(Instance.flavor["original_id"].as_string() == wanted)
    if "reservation_id" in params:
        query = query.where(Instance.reservation_id == params["reservation_id"])
    if "availability_zone" in params:
        query = query.where(Instance.availability_zone == params["availability_zone"])
    for key, column in (("host", Instance.host), ("node", Instance.node)):
        if key in params:
            if not admin:
                raise Forbidden(f"Policy doesn't allow filtering by {key} for non-admin users.")
            query = query.where(column == params[key])
    if "locked" in params and at_least(request, "2.73"):
        query = query.where(Instance.locked.is_(as_bool(params["locked"], "locked")))
    if at_least(request, "2.26"):
        for key in ("tags", "tags-any", "not-tags", "not-tags-any"):
            if key not in params:
                continue
            names = [t for t in params[key].split(",") if t]
            tagged = select(InstanceTag.instance_uuid).where(InstanceTag.tag.in_(names))
            if key == "tags":
                tagged = tagged.group_by(InstanceTag.instance_uuid).having(
                    func.count(func.distinct(InstanceTag.tag)) == len(set(names))
                )
            if key in ("tags", "tags-any"):
                query = query.where(Instance.uuid.in_(tagged))
            elif key == "not-tags":
                query = query.where(Instance.uuid.not_in(
                    select(InstanceTag.instance_uuid).where(InstanceTag.tag.in_(names))
                    .group_by(InstanceTag.instance_uuid)
                    .having(func.count(func.distinct(InstanceTag.tag)) == len(set(names)))
                ))  # fmt: skip
            else:
                query = query.where(Instance.uuid.not_in(tagged))
    sort_keys = params.getlist("sort_key") or ["created_at"]
    sort_dirs = params.getlist("sort_dir")
    for index, key in enumerate(sort_keys):
        if key not in SORT_KEYS:
            raise BadRequest(f"Invalid sort_key {key!r}.")
        direction = sort_dirs[index] if index < len(sort_dirs) else "desc"
        column = SORT_KEYS[key]
        query = query.order_by(column.asc() if direction == "asc" else column.desc())
    return query.order_by(Instance.id.desc())


async def _listing(request: Request, *, detail: bool) -> Response:
    enforce(request, "read", own(request))
    params = request.query_params
    query = _filtered(request)
    limit, marker = limit_marker(request)
    name = params.get("name")
    ip = params.get("ip")
    pattern = None
    if name:
        try:
            pattern = re.compile(name)
        except re.error:
            raise BadRequest(f"Invalid name filter {name!r}.") from None
    async with service(request).db.session() as session:
        if marker is not None:
            found = (
                await session.execute(select(Instance.id).where(Instance.uuid == marker))
            ).first()
            if found is None:
                raise BadRequest(f"marker [{marker}] not found")
        servers: list[Instance] = list((await session.execute(query)).scalars())
        if pattern is not None:
            servers = [s for s in servers if pattern.search(s.display_name)]
        if ip:
            ip_pattern = re.compile(ip)
            servers = [
                s for s in servers
                if any(ip_pattern.search(f["ip_address"]) for p in s.ports or []
                       for f in p.get("fixed_ips", []))
            ]  # fmt: skip
        if marker is not None:
            uuids = [s.uuid for s in servers]
            servers = servers[uuids.index(marker) + 1 :] if marker in uuids else []
        page = servers[:limit] if limit is not None else servers
        views = (
            await render(request, session, page)
            if detail
            else [server_summary(request, s) for s in page]
        )
    body: dict[str, Any] = {"servers": views}
    if limit is not None and len(servers) > limit and page:
        root = service_root(request)
        suffix = "/detail" if detail else ""
        body["servers_links"] = [
            {
                "rel": "next",
                "href": f"{root}/v2.1/servers{suffix}?limit={limit}&marker={page[-1].uuid}",
            }
        ]
    return JSONResponse(body)


@routes.get("/v2.1/servers")
async def list_servers(request: Request) -> Response:
    return await _listing(request, detail=False)


@routes.get("/v2.1/servers/detail")
async def list_servers_detail(request: Request) -> Response:
    return await _listing(request, detail=True)


@routes.get("/v2.1/servers/{server_id}")
async def show_server(request: Request) -> Response:
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
        (view,) = await render(request, session, [server])
    return JSONResponse({"server": view})


# ----- create --------------------------------------------------------------------------


def _metadata(value: Any, name: str = "metadata") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field/attribute {name}.")
    checked = {}
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise BadRequest(f"Invalid input for field/attribute {name}. Key {key!r}.")
        if not isinstance(item, str) or len(item) > 255:
            raise BadRequest(f"Invalid input for field/attribute {name}. Value of {key!r}.")
        checked[key] = item
    return checked


async def check_metadata_quota(request: Request, project_id: str, count: int) -> None:
    """403 when a server would carry more metadata items than the project may."""
    if not count:
        return
    limit = (await service(request).quotas.limits(project_id))["metadata_items"]
    if 0 <= limit < count:
        raise Forbidden(f"Quota exceeded for metadata_items: Requested {count}, but "
                        f"already used 0 of {limit} metadata_items")  # fmt: skip


async def _requested_networks(
    request: Request, body: dict[str, Any], project_id: str
) -> list[dict[str, Any]]:
    networks = body.get("networks")
    if networks is None and at_least(request, "2.37"):
        raise BadRequest("Invalid input for field/attribute server. 'networks' is required.")
    if networks == "none":
        return []
    if networks is None or networks == "auto":
        found = await usable_networks(request, project_id)
        if len(found) > 1:
            raise Conflict(
                "Multiple possible networks found, use a Network ID to be more specific."
            )
        if not found:
            if networks == "auto":
                raise BadRequest("Unable to automatically allocate a network for project "
                                 f"{project_id}")  # fmt: skip
            return []
        return [{"uuid": found[0]["id"]}]
    if not isinstance(networks, list):
        raise BadRequest("Invalid input for field/attribute networks.")
    requested = []
    for item in networks:
        if not isinstance(item, dict):
            raise BadRequest("Invalid input for field/attribute networks.")
        if item.get("port"):
            port = await port_of(request, str(item["port"]))
            requested.append({"port": port["id"], "uuid": port["network_id"]})
        elif item.get("uuid"):
            net = await network_of(request, str(item["uuid"]))
            entry: dict[str, Any] = {"uuid": net["id"]}
            if item.get("fixed_ip"):
                entry["fixed_ip"] = str(item["fixed_ip"])
            requested.append(entry)
        else:
            raise BadRequest("Bad networks format: network uuid is not in proper format")
    return requested


async def _zone_and_host(
    request: Request, session: AsyncSession, zone: Any
) -> tuple[str | None, str | None]:
    """The requested zone and (admin) forced host of ``zone:host[:node]``."""
    if zone in (None, ""):
        return None, None
    if not isinstance(zone, str):
        raise BadRequest("Invalid input for field/attribute availability_zone.")
    name, _, host = zone.partition(":")
    host = host.partition(":")[0]
    if host and not is_admin(request):
        raise Forbidden("Policy doesn't allow os_compute_api:servers:create:forced_host to be "
                        "performed.")  # fmt: skip
    if name:
        default = service(request).config.default_availability_zone
        zones = {
            value
            for (value,) in (
                await session.execute(
                    select(AggregateMetadata.value)
                    .join(Aggregate, Aggregate.id == AggregateMetadata.aggregate_id)
                    .where(AggregateMetadata.key == "availability_zone")
                )
            ).all()
        }
        if name != default and name not in zones:
            raise BadRequest("The requested availability zone is not available")
    return name or None, host or None


async def _group(request: Request, session: AsyncSession, hints: dict[str, Any]) -> int | None:
    group_id = hints.get("group")
    if not group_id:
        return None
    group = (
        await session.execute(select(ServerGroup).where(ServerGroup.uuid == str(group_id)))
    ).scalar_one_or_none()
    if group is None or (group.project_id != caller(request).project_id and not is_admin(request)):
        raise BadRequest(f"Invalid server group {group_id}.")
    return group.id


@routes.post("/v2.1/servers")
async def create_server(request: Request) -> Response:
    context = enforce(request, "write", own(request))
    data = await json_body(request)
    body = body_of(data, "server")
    hints = data.get("os:scheduler_hints") or data.get("OS-SCH-HNT:scheduler_hints") or {}
    if not isinstance(hints, dict):
        raise BadRequest("Invalid input for field/attribute os:scheduler_hints.")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise BadRequest("Invalid input for field/attribute name.")
    project_id, user_id = context.project_id or "", context.user_id or ""
    compute = service(request)
    min_count = as_int(body.get("min_count", 1), "min_count", minimum=1)
    max_count = as_int(body.get("max_count", min_count), "max_count", minimum=1)
    if min_count > max_count:
        raise BadRequest("min_count must be <= max_count")
    metadata = _metadata(body.get("metadata"))
    await check_metadata_quota(request, project_id, len(metadata))
    user_data = body.get("user_data")
    if user_data is not None:
        if not isinstance(user_data, str) or len(user_data) > MAX_USER_DATA:
            raise BadRequest("Invalid input for field/attribute user_data.")
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("Invalid input for field/attribute user_data. "
                             "Value must be base64 encoded.") from None  # fmt: skip
    tags = body.get("tags") or []
    if tags and (
        not at_least(request, "2.52")
        or not isinstance(tags, list)
        or any(not isinstance(t, str) or "," in t or "/" in t for t in tags)
    ):
        raise BadRequest("Invalid input for field/attribute tags.")  # fmt: skip
    description = body.get("description")
    if description is not None and not at_least(request, "2.19"):
        raise BadRequest("Additional properties are not allowed ('description' was unexpected)")
    security_groups = [
        str(group.get("name")) for group in body.get("security_groups") or []
        if isinstance(group, dict) and group.get("name")
    ] or ["default"]  # fmt: skip
    for group_name in security_groups:
        if group_name != "default" and not await security_group_exists(request, group_name):
            raise BadRequest(f"Security group {group_name} not found for project {project_id}.")
    async with compute.db.session() as session:
        flavor = await usable_flavor(request, session, body.get("flavorRef"))
        specs = await extra_specs_of(session, flavor)
        zone, forced_host = await _zone_and_host(request, session, body.get("availability_zone"))
        group_pk = await _group(request, session, hints)
        key_data = None
        key_name = body.get("key_name")
        if key_name is not None:
            pair = (
                await session.execute(
                    select(KeyPair).where(KeyPair.user_id == user_id, KeyPair.name == key_name)
                )
            ).scalar_one_or_none()
            if pair is None:
                raise BadRequest("Invalid key_name provided.")
            key_data = pair.public_key
    image_ref = body.get("imageRef") or ""
    image_meta: dict[str, Any] = {}
    image: dict[str, Any] | None = None
    if image_ref:
        image_ref = str(image_ref).rstrip("/").rsplit("/", 1)[-1]
        image = await image_of(request, image_ref)
        size, min_disk = image.get("size") or 0, image.get("min_disk") or 0
        if flavor.root_gb and (size > flavor.root_gb * GIB or min_disk > flavor.root_gb):
            raise BadRequest("Flavor's disk is too small for requested image. Flavor disk is "
                             f"{flavor.root_gb * GIB} bytes, image is {size} bytes.")  # fmt: skip
        if (image.get("min_ram") or 0) > flavor.memory_mb:
            raise BadRequest("Flavor's memory is too small for requested image.")
        known = ("id", "name", "status", "size", "min_disk", "min_ram", "disk_format",
                 "container_format", "checksum", "owner", "visibility")  # fmt: skip
        image_meta = {
            "name": image.get("name"),
            "disk_format": image.get("disk_format"),
            "container_format": image.get("container_format"),
            "min_disk": min_disk,
            "min_ram": image.get("min_ram") or 0,
            "size": size,
            "properties": {
                k: v for k, v in image.items()
                if k not in known and isinstance(v, (str, int, float, bool))
            },
        }  # fmt: skip
    elif not body.get("block_device_mapping_v2"):
        raise BadRequest("Missing imageRef attribute")
    requested = await _requested_networks(request, body, project_id)
    planned = await block_device_mapping.plan(request, body, project_id, max_count, image)
    if max_count > 1 and any(item.get("port") for item in requested):
        raise BadRequest(
            "Unable to launch multiple instances with a single configured port ID. "
            "Please launch your instance one by one with different ports."
        )
    embedded = embedded_flavor(flavor, specs)
    try:
        deltas = quota_deltas(embedded, max_count)
        await UserQuotas(compute.db).check(project_id, caller(request).user_id or "", deltas)
        reservation = await compute.quotas.reserve(project_id, deltas)
    except QuotaExceeded as exc:
        raise Forbidden(str(exc)) from None
    request_id = request.scope["state"].get("request_id") or f"req-{uuid.uuid4()}"
    reservation_id = f"r-{uuid.uuid4().hex[:8]}"
    members = 0
    servers: list[Instance] = []
    try:
        async with compute.db.session() as session:
            if group_pk is not None:
                members = (
                    await session.execute(
                        select(func.count()).where(ServerGroupMember.group_id == group_pk)
                    )
                ).scalar_one()
                limit = (await compute.quotas.limits(project_id))["server_group_members"]
                if 0 <= limit < members + max_count:
                    raise Forbidden("Quota exceeded, too many servers in group")
            for index in range(max_count):
                inst = Instance(
                    uuid=str(uuid.uuid4()),
                    project_id=project_id,
                    user_id=user_id,
                    display_name=name,
                    display_description=description,
                    hostname=hostname_of(name if max_count == 1 else f"{name}-{index + 1}"),
                    vm_state=vm_states.BUILDING,
                    task_state=vm_states.SCHEDULING,
                    power_state=0,
                    availability_zone=zone,
                    flavor=embedded,
                    vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb,
                    root_gb=flavor.root_gb,
                    ephemeral_gb=flavor.ephemeral_gb,
                    image_ref=image_ref,
                    image_meta=image_meta,
                    key_name=key_name,
                    key_data=key_data,
                    user_data=user_data,
                    config_drive=bool(body.get("config_drive")),
                    access_ip_v4=body.get("accessIPv4"),
                    access_ip_v6=body.get("accessIPv6"),
                    launch_index=index,
                    reservation_id=reservation_id,
                    requested_networks=requested,
                    security_groups=security_groups,
                    scheduler_hints=hints,
                    block_device_mapping=list(body.get("block_device_mapping_v2") or []),
                    ports=[],
                    system_metadata={
                        k: v
                        for k, v in (
                            ("requested_zone", zone),
                            ("force_host", forced_host),
                            ("requested_host", body.get("host") if is_admin(request) else None),
                        )
                        if v
                    },
                )
                session.add(inst)
                for key, value in metadata.items():
                    session.add(InstanceMetadata(instance_uuid=inst.uuid, key=key, value=value))
                for tag in dict.fromkeys(tags):
                    session.add(InstanceTag(instance_uuid=inst.uuid, tag=tag))
                if group_pk is not None:
                    session.add(ServerGroupMember(group_id=group_pk, instance_uuid=inst.uuid))
                open_action(session, inst.uuid, "create", request_id, project_id, user_id)
                servers.append(inst)
            await block_device_mapping.record(request, session, servers, planned)
    except BaseException:
        await compute.quotas.rollback(reservation)
        raise
    await compute.quotas.commit(reservation)
    await compute.conductor.cast(
        "build_instances", instance_uuids=[s.uuid for s in servers], request_id=request_id
    )
    if body.get("return_reservation_id"):
        return JSONResponse({"reservation_id": reservation_id}, status_code=202)
    first = servers[0]
    created = {
        "id": first.uuid,
        "links": server_summary(request, first)["links"],
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": n} for n in security_groups],
        "adminPass": body.get("adminPass") or uuid.uuid4().hex[:12],
    }
    location = created["links"][0]["href"]
    return JSONResponse({"server": created}, status_code=202, headers={"Location": location})


# ----- update and delete -----------------------------------------------------------------


@routes.put("/v2.1/servers/{server_id}")
async def update_server(request: Request) -> Response:
    body = body_of(await json_body(request), "server")
    allowed = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
    if at_least(request, "2.19"):
        allowed.add("description")
    if at_least(request, "2.90"):
        allowed.add("hostname")
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"Additional properties are not allowed ({sorted(unknown)[0]!r} "
                         "was unexpected)")  # fmt: skip
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"], "write")
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not name.strip() or len(name) > 255:
                raise BadRequest("Invalid input for field/attribute name.")
            server.display_name = name
        if "description" in body:
            server.display_description = body["description"]
        if "hostname" in body:
            server.hostname = hostname_of(str(body["hostname"]))
        if "accessIPv4" in body:
            server.access_ip_v4 = body["accessIPv4"]
        if "accessIPv6" in body:
            server.access_ip_v6 = body["accessIPv6"]
        server.updated_at = dt.datetime.now(dt.UTC)
        await session.flush()
        (view,) = await render(request, session, [server])
    return JSONResponse({"server": view})


# A delete with ``reclaim_instance_interval`` set only powers these off (restorable).
SOFT_DELETABLE = (vm_states.ACTIVE, vm_states.STOPPED, vm_states.PAUSED, vm_states.SUSPENDED,
                  vm_states.RESCUED)  # fmt: skip


async def delete(request: Request, server_id: str, *, force: bool = False) -> None:
    """Delete a server. With ``reclaim_instance_interval`` set, a server running on a host
    is soft-deleted (its agent powers it off; it keeps its resources and quota until the
    reclaim or ``forceDelete``); otherwise, or with ``force``, it goes for good."""
    compute = service(request)
    request_id = request.scope["state"].get("request_id") or ""
    context = caller(request)
    async with compute.db.session() as session:
        server = await find_server(request, session, server_id, "write")
        check_unlocked(request, server)
        if server.task_state == vm_states.DELETING:
            return
        soft = (
            not force
            and compute.config.reclaim_instance_interval > 0
            and server.host is not None
            and server.vm_state in SOFT_DELETABLE
            and server.task_state is None
        )
        building = server.vm_state == vm_states.BUILDING
        if soft:
            server.task_state = vm_states.TASK_OF["soft_delete"]
            server.deleted_at = dt.datetime.now(dt.UTC)
            server.system_metadata = {
                **(server.system_metadata or {}), "pre_action_state": server.vm_state
            }  # fmt: skip
        else:
            server.task_state = vm_states.DELETING
        open_action(session, server.uuid, "forceDelete" if force else "delete", request_id,
                    context.project_id or "", context.user_id or "")  # fmt: skip
        payload = instance_payload(server)
    if soft:
        await compute.agents.cast(str(server.host), "run_action", instance=payload,
                                  action="soft_delete", request_id=request_id, args={})  # fmt: skip
    elif not building:
        await compute.conductor.cast("delete_server", uuid=server.uuid, request_id=request_id)


@routes.delete("/v2.1/servers/{server_id}")
async def delete_server(request: Request) -> Response:
    await delete(request, request.path_params["server_id"])
    return Response(status_code=204)
