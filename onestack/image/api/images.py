"""``/v2/images``: create, list, show, JSON-patch update, delete, deactivate, tags."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import and_, exists, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from onestack.core.asgi.paging import paginate, read_limit
from onestack.core.asgi.request import json_body, query_bool
from onestack.core.asgi.routing import RouteTable, service_root
from onestack.core.db import affected, utcnow
from onestack.core.quota import QuotaExceeded
from onestack.image import views
from onestack.image.api.common import (
    caller,
    check,
    enforce,
    get_image,
    owner_target,
    service,
    visible_to,
)
from onestack.image.inspection import ACCEPTED
from onestack.image.models import Image, ImageMember

routes = RouteTable()

DISK_FORMATS = sorted(ACCEPTED)
CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
VISIBILITIES = ("public", "private", "shared", "community")
STATUSES = ("pending", "accepted", "rejected")
# Attributes the service computes: never settable by a client.
READ_ONLY = {
    "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
    "created_at", "updated_at", "self", "file", "schema", "direct_url", "stores",
}  # fmt: skip
SETTABLE = {
    "name", "visibility", "protected", "os_hidden", "owner", "disk_format",
    "container_format", "min_disk", "min_ram", "tags",
}  # fmt: skip
RESERVED_PREFIXES = ("os_glance",)
RESERVED = {"location", "locations", "deleted", "deleted_at", "id"}
PATCH_TYPES = {
    "application/openstack-images-v2.1-json-patch",
    "application/openstack-images-v2.0-json-patch",
}


def _check_property(name: str, value: Any) -> None:
    if name in READ_ONLY:
        raise Forbidden(f"Attribute '{name}' is read-only.")
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        raise Forbidden(f"Attribute '{name}' is reserved.")
    if not isinstance(value, str) or len(name) > 255 or len(value) > 65535:
        raise BadRequest(f"Property '{name}' must be a string of at most 65535 characters.")


def _apply(request: Request, row: Image, name: str, value: Any) -> None:
    """Set one attribute (core or custom) after validating it, as create and patch both do."""
    if name in SETTABLE:
        _set_core(request, row, name, value)
    else:
        _check_property(name, value)
        row.properties = {**(row.properties or {}), name: value}


def _set_core(request: Request, row: Image, name: str, value: Any) -> None:
    if name == "name":
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise BadRequest("Invalid value for name: at most 255 characters.")
    elif name == "visibility":
        if value not in VISIBILITIES:
            raise BadRequest(f"Invalid value '{value}' for visibility.")
        if value == "public" and not check(request, "publicize_image"):
            raise Forbidden("Only administrators may make images public.")
        if value == "community" and not check(request, "communitize_image", owner_target(row)):
            raise Forbidden("Not allowed to make this image community.")
    elif name in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise BadRequest(f"Invalid value for {name}: a boolean is expected.")
    elif name in ("min_disk", "min_ram"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BadRequest(f"Invalid value for {name}: a non-negative integer is expected.")
    elif name == "disk_format":
        if value is not None and value not in DISK_FORMATS:
            raise BadRequest(
                f"Invalid value '{value}' for disk_format: one of {', '.join(DISK_FORMATS)}."
            )
        if row.status not in ("queued",) and value != row.disk_format:
            raise Conflict("disk_format can only change while the image is queued.")
    elif name == "container_format":
        if value is not None and value not in CONTAINER_FORMATS:
            choices = ", ".join(CONTAINER_FORMATS)
            raise BadRequest(f"Invalid value '{value}' for container_format: one of {choices}.")
        if row.status not in ("queued",) and value != row.container_format:
            raise Conflict("container_format can only change while the image is queued.")
    elif name == "owner":
        if value != row.owner and not check(request, "set_owner"):
            raise Forbidden("Only administrators may change an image's owner.")
    elif name == "tags":
        if not isinstance(value, list) or not all(
            isinstance(t, str) and 0 < len(t) <= 255 for t in value
        ):
            raise BadRequest("Invalid value for tags: a list of strings of 1 to 255 characters.")
        value = list(dict.fromkeys(value))
    setattr(row, name, value)


@routes.post("/v2/images")
async def create_image(request: Request) -> Response:
    context = caller(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    owner = body.get("owner") or context.project_id
    enforce(request, "add_image", {"owner": context.project_id})
    image_id = body.pop("id", None) or str(uuid.uuid4())
    try:
        image_id = str(uuid.UUID(str(image_id)))
    except ValueError:
        raise BadRequest(f"Invalid id {image_id!r}: a UUID is expected.") from None
    row = Image(
        id=image_id,
        owner=context.project_id,
        status="queued",
        visibility="shared",
        protected=False,
        os_hidden=False,
        min_disk=0,
        min_ram=0,
        tags=[],
        properties={},
        locations={},
    )
    for name, value in body.items():
        _apply(request, row, name, value)
    if owner != context.project_id:
        _set_core(request, row, "owner", owner)
    images = service(request)
    try:
        async with (
            images.quotas.hold(row.owner or "", {"image_count_total": 1}),
            images.db.session() as session,
        ):
            session.add(row)
            await session.flush()
    except QuotaExceeded as exc:
        raise PayloadTooLarge(str(exc)) from None
    except IntegrityError:
        raise Conflict(f"An image with identifier {image_id} already exists") from None
    return JSONResponse(
        views.image(row),
        status_code=201,
        headers={"Location": f"{service_root(request)}/v2/images/{row.id}"},
    )


def _time_filter(column: Any, spec: str) -> Any:
    op, _, value = spec.partition(":")
    if not value:
        op, value = "eq", spec
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid time filter {spec!r}.") from None
    operators = {
        "eq": column == when,
        "neq": column != when,
        "gt": column > when,
        "gte": column >= when,
        "lt": column < when,
        "lte": column <= when,
    }
    if op not in operators:
        raise BadRequest(f"Invalid operator {op!r} in filter {spec!r}.")
    return operators[op]


def _in_or_equal(column: Any, value: str) -> Any:
    if value.startswith("in:"):
        return column.in_(value[3:].split(","))
    return column == value


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer.")
    return int(raw)


def _sort(request: Request) -> list[tuple[str, str]]:
    q = request.query_params
    if "sort" in q:
        pairs = []
        for item in q["sort"].split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
        return pairs
    keys = q.getlist("sort_key") or ["created_at"]
    dirs = q.getlist("sort_dir") or ["desc"]
    return [(k, dirs[min(i, len(dirs) - 1)]) for i, k in enumerate(keys)]


@routes.get("/v2/images")
async def list_images(request: Request) -> Response:
    context = enforce(request, "get_images")
    q = request.query_params
    query = select(Image)
    member_status = q.get("member_status", "accepted")
    visibility = q.get("visibility")
    if visibility and visibility not in (*VISIBILITIES, "all"):
        raise BadRequest(f"Invalid visibility filter {visibility!r}.")
    if member_status not in ("accepted", "pending", "rejected", "all"):
        raise BadRequest(f"Invalid member_status filter {member_status!r}.")
    project = context.project_id
    if not context.is_admin:
        query = query.where(visible_to(context))
    if visibility and visibility != "all":
        query = query.where(Image.visibility == visibility)
    elif not visibility:
        # Community images are listed only when asked for (or when one's own).
        query = query.where((Image.visibility != "community") | (Image.owner == project))
    if not context.is_admin or visibility == "shared":
        shared_ok = exists().where(
            ImageMember.image_id == Image.id,
            ImageMember.member_id == project,
            ImageMember.status.in_(STATUSES if member_status == "all" else (member_status,)),
        )
        query = query.where((Image.visibility != "shared") | (Image.owner == project) | shared_ok)
    for name in ("name", "status", "owner", "disk_format", "container_format"):
        if name in q:
            query = query.where(_in_or_equal(getattr(Image, name), q[name]))
    for flag in ("protected", "os_hidden"):
        value = query_bool(request, flag)
        if value is not None:
            query = query.where(getattr(Image, flag).is_(value))
    if "os_hidden" not in q:
        query = query.where(Image.os_hidden.is_(False))
    size_min, size_max = _int_param(request, "size_min"), _int_param(request, "size_max")
    if size_min is not None:
        query = query.where(Image.size >= size_min)
    if size_max is not None:
        query = query.where(Image.size <= size_max)
    for name in ("created_at", "updated_at"):
        if name in q:
            query = query.where(_time_filter(getattr(Image, name), q[name]))
    wanted_tags = q.getlist("tag")
    limit = read_limit(request, maximum=1000)
    async with service(request).db.session() as session:
        page = await paginate(
            session, query, Image, limit=limit, marker=q.get("marker"), sort=_sort(request)
        )
    rows = [r for r in page.rows if set(wanted_tags) <= set(r.tags or [])]
    body: dict[str, Any] = {
        "images": [views.image(r) for r in rows],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if page.more and page.rows:
        params = [(k, v) for k, v in q.multi_items() if k != "marker"]
        params.append(("marker", page.rows[-1].id))
        body["next"] = f"/v2/images?{urlencode(params)}"
    return JSONResponse(body)


@routes.get("/v2/images/{image_id}")
async def show_image(request: Request) -> Response:
    async with service(request).db.session() as session:
        row = await get_image(request, session, request.path_params["image_id"])
        return JSONResponse(views.image(row))


def _pointer(path: object) -> str:
    """The attribute a JSON pointer names: only top-level ones can be patched."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadRequest(f"Invalid JSON pointer {path!r}.")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    if parts[0] in ("locations", "direct_url"):
        raise Forbidden("It's not allowed to update locations.")
    if len(parts) > 1:
        raise BadRequest(f"Invalid JSON pointer {path!r}: only top-level attributes.")
    return parts[0]


def _operation(operation: object) -> tuple[object, object]:
    """The op and path of one change: ``{"op": "replace", "path": "/name"}`` or, as
    Glance also reads it (Tempest sends it), ``{"replace": "/name"}``."""
    if isinstance(operation, dict):
        if "op" in operation and "path" in operation:
            return operation["op"], operation["path"]
        named = [op for op in ("add", "replace", "remove") if op in operation]
        if len(named) == 1:
            return named[0], operation[named[0]]
    raise BadRequest("Each operation needs 'op' and 'path'.")


@routes.get("/v2/images/")
@routes.patch("/v2/images/")
@routes.delete("/v2/images/")
async def image_without_id(request: Request) -> Response:
    """An empty image id names no image (404), not the collection."""
    raise NotFound("No image found with ID ")


@routes.patch("/v2/images/{image_id}")
async def update_image(request: Request) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in PATCH_TYPES:
        raise UnsupportedMediaType(
            f"Unsupported Content-Type {content_type!r}: "
            "use application/openstack-images-v2.1-json-patch."
        )
    operations = await json_body(request)
    if not isinstance(operations, list):
        raise BadRequest("A JSON-patch document (a list of operations) is expected.")
    images = service(request)
    async with images.db.session() as session:
        row = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "modify_image", owner_target(row))
        for operation in operations:
            op, path = _operation(operation)
            name = _pointer(path)
            if name == "id":
                raise Forbidden("Attribute 'id' is read-only.")
            if op in ("add", "replace"):
                if "value" not in operation:
                    raise BadRequest(f"Operation '{op}' needs a value.")
                if op == "replace" and name not in SETTABLE and name not in (row.properties or {}):
                    if name in READ_ONLY:
                        raise Forbidden(f"Attribute '{name}' is read-only.")
                    raise Conflict(f"Property {name} does not exist.")
                _apply(request, row, name, operation["value"])
            elif op == "remove":
                if name in READ_ONLY or name in SETTABLE:
                    raise Forbidden(f"Attribute '{name}' is read-only or cannot be removed.")
                properties = dict(row.properties or {})
                if name not in properties:
                    raise Conflict(f"Property {name} does not exist.")
                del properties[name]
                row.properties = properties
            else:
                raise BadRequest(f"Unsupported JSON-patch operation {op!r}.")
        row.updated_at = utcnow()
        result = views.image(row)
    return JSONResponse(result)


@routes.delete("/v2/images/{image_id}")
async def delete_image(request: Request) -> Response:
    images = service(request)
    async with images.db.session() as session:
        row = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "delete_image", owner_target(row))
        if row.protected:
            raise Forbidden(f"Image {row.id} is protected and cannot be deleted.")
        if row.status in ("saving", "importing"):
            raise Conflict(f"Image {row.id} is {row.status}; try again when the upload ends.")
        locations = dict(row.locations or {})
        owner, size = row.owner, row.size
        await session.delete(row)
    for store_name, location in locations.items():
        await images.stores[store_name].delete(location)
    released = {"image_count_total": 1}
    if size and locations:
        released["image_size_total"] = -(-size // (1 << 20))
    await images.quotas.release(owner or "", released)
    return Response(status_code=204)


async def _set_status(request: Request, rule: str, allowed: tuple[str, ...], new: str) -> Response:
    images = service(request)
    async with images.db.session() as session:
        row = await get_image(request, session, request.path_params["image_id"])
        enforce(request, rule, owner_target(row))
        if row.status == new:
            return Response(status_code=204)
        if row.status not in allowed:
            raise Conflict(f"Not allowed to {rule} an image in status '{row.status}'.")
        result = await session.execute(
            update(Image)
            .where(and_(Image.id == row.id, Image.status == row.status))
            .values(status=new, updated_at=utcnow())
        )
        if not affected(result):
            raise Conflict("The image changed status meanwhile; try again.")
    return Response(status_code=204)


@routes.post("/v2/images/{image_id}/actions/deactivate")
async def deactivate(request: Request) -> Response:
    return await _set_status(request, "deactivate", ("active",), "deactivated")


@routes.post("/v2/images/{image_id}/actions/reactivate")
async def reactivate(request: Request) -> Response:
    return await _set_status(request, "reactivate", ("deactivated",), "active")


@routes.put("/v2/images/{image_id}/tags/{tag}")
async def add_tag(request: Request) -> Response:
    tag = request.path_params["tag"]
    async with service(request).db.session() as session:
        row = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "modify_image", owner_target(row))
        _set_core(request, row, "tags", [*(row.tags or []), tag])
        row.updated_at = utcnow()
    return Response(status_code=204)


@routes.delete("/v2/images/{image_id}/tags/{tag}")
async def delete_tag(request: Request) -> Response:
    tag = request.path_params["tag"]
    async with service(request).db.session() as session:
        row = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "modify_image", owner_target(row))
        if tag not in (row.tags or []):
            raise NotFound(f"Tag {tag} not found.")
        row.tags = [t for t in row.tags if t != tag]
        row.updated_at = utcnow()
    return Response(status_code=204)
