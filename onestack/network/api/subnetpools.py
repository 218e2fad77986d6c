"""``/v2.0/subnetpools``: prefixes that subnets are carved from (see ``subnets.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network import ipam
from onestack.network.api.common import (
    body_of,
    caller,
    enforce,
    fetch,
    is_admin,
    list_response,
    one,
    quota_held,
    scoped,
    service,
)
from onestack.network.models import Subnet, SubnetPool, new_uuid
from onestack.network.views import subnetpool_view

routes = RouteTable()

COLUMNS = {
    name: name
    for name in (
        "id",
        "name",
        "description",
        "project_id",
        "ip_version",
        "default_prefixlen",
        "min_prefixlen",
        "max_prefixlen",
        "shared",
        "is_default",
        "default_quota",
        "address_scope_id",
        "created_at",
        "revision_number",
    )
} | {"tenant_id": "project_id"}
# Neutron's bounds when the client gives none.
MIN_PREFIXLEN = {4: 8, 6: 64}
ADMIN_ONLY = ("shared", "is_default")


def visible_pools() -> Any:
    """Besides its own, a project sees the shared pools."""
    return SubnetPool.shared.is_(True)


async def lock_pool(session: AsyncSession, pool_id: str) -> None:
    """Write the pool row's ``hash``, which locks it to the end of the transaction (SQLite:
    the database): allocations from a pool, and its deletion, run one at a time."""
    await session.execute(
        update(SubnetPool).where(SubnetPool.id == pool_id).values(hash=new_uuid())
    )


def integer_attribute(body: dict[str, Any], name: str, default: int | None) -> int | None:
    """``body[name]`` as an integer (clients may send digits as a string), else ``default``."""
    value = body.get(name, default)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for {name}: '{value}' is not an integer.") from None


def _check_admin_attributes(request: Request, body: dict[str, Any]) -> None:
    for name in ADMIN_ONLY:
        if name in body and not isinstance(body[name], bool):
            raise BadRequest(f"Invalid input for {name}: a boolean is expected.")
        if body.get(name) and not is_admin(request):
            raise Forbidden(
                f"(rule:create_subnetpool:{name}) is disallowed by policy",
                type="PolicyNotAuthorized",
            )


def _apply_lengths(row: SubnetPool, body: dict[str, Any]) -> None:
    """Set and check min <= default <= max within the address length."""
    width = 32 if row.ip_version == 4 else 128
    for name in ("min_prefixlen", "max_prefixlen", "default_prefixlen"):
        value = integer_attribute(body, name, getattr(row, name))
        setattr(row, name, value)
    if "default_prefixlen" not in body and "min_prefixlen" in body:
        row.default_prefixlen = max(row.default_prefixlen, row.min_prefixlen)
    if not 0 <= row.min_prefixlen <= row.default_prefixlen <= row.max_prefixlen <= width:
        raise BadRequest(
            f"Illegal prefix bounds: min_prefixlen={row.min_prefixlen}, default_prefixlen="
            f"{row.default_prefixlen}, max_prefixlen={row.max_prefixlen} (0 to {width}, "
            "in that order).",
            type="IllegalSubnetPoolPrefixBounds",
        )


async def _check_single_default(session: Any, row: SubnetPool) -> None:
    if not row.is_default:
        return
    other = await session.scalar(
        select(SubnetPool.id).where(
            SubnetPool.is_default.is_(True),
            SubnetPool.ip_version == row.ip_version,
            SubnetPool.id != row.id,
        )
    )
    if other:
        raise BadRequest(
            f"A default subnetpool for this IP family has already been set ({other}). "
            "Only one default may exist per IP family.",
            type="InvalidInput",
        )


@routes.post("/v2.0/subnetpools")
async def create_subnetpool(request: Request) -> Response:
    body = body_of(await json_body(request), "subnetpool")
    prefixes = ipam.parse_prefixes(body.get("prefixes"))
    ip_version = prefixes[0].version
    if body.get("ip_version", ip_version) != ip_version:
        raise BadRequest(f"Invalid input: prefixes are not IPv{body['ip_version']}.")
    if body.get("address_scope_id") is not None:
        raise BadRequest("Address scopes are not supported: address_scope_id must be null.")
    _check_admin_attributes(request, body)
    project_id = str(
        body.get("project_id", caller(request).project_id)
        if is_admin(request)
        else caller(request).project_id
    )
    enforce(request, "create", {"project_id": project_id})
    row = SubnetPool(
        project_id=project_id,
        name=str(body.get("name", "")),
        description=str(body.get("description", "")),
        tags=[],
        revision_number=1,
        ip_version=ip_version,
        prefixes=[str(p) for p in prefixes],
        min_prefixlen=MIN_PREFIXLEN[ip_version],
        max_prefixlen=prefixes[0].max_prefixlen,
        shared=bool(body.get("shared", False)),
        is_default=bool(body.get("is_default", False)),
        default_quota=integer_attribute(body, "default_quota", None),
        address_scope_id=None,
    )
    row.default_prefixlen = integer_attribute(body, "default_prefixlen", None) or row.min_prefixlen
    _apply_lengths(row, body)
    async with (
        quota_held(request, project_id, "subnetpool"),
        service(request).db.session() as session,
    ):
        await _check_single_default(session, row)
        session.add(row)
        await session.flush()
        result = subnetpool_view(row)
    return one("subnetpool", result, request, 201)


@routes.get("/v2.0/subnetpools")
async def list_subnetpools(request: Request) -> Response:
    enforce(request, "read")
    query = scoped(select(SubnetPool), SubnetPool, request, visible_pools())
    return await list_response(request, query, SubnetPool, "subnetpools", subnetpool_view, COLUMNS)


@routes.get("/v2.0/subnetpools/{subnetpool_id}")
async def show_subnetpool(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        row = await fetch(
            request,
            session,
            SubnetPool,
            request.path_params["subnetpool_id"],
            "subnet_pool",
            visible_pools(),
        )
        return one("subnetpool", subnetpool_view(row), request)


@routes.put("/v2.0/subnetpools/{subnetpool_id}")
async def update_subnetpool(request: Request) -> Response:
    body = body_of(await json_body(request), "subnetpool")
    for frozen in ("ip_version", "project_id", "tenant_id"):
        if frozen in body:
            raise BadRequest(f"Cannot update read-only attribute {frozen}.")
    if body.get("address_scope_id") is not None:
        raise BadRequest("Address scopes are not supported: address_scope_id must be null.")
    _check_admin_attributes(request, body)
    async with service(request).db.session() as session:
        row = await fetch(
            request, session, SubnetPool, request.path_params["subnetpool_id"], "subnet_pool"
        )
        enforce(request, "update", {"project_id": row.project_id})
        if "prefixes" in body:
            grown = ipam.parse_prefixes(body["prefixes"] + row.prefixes)
            if grown[0].version != row.ip_version:
                raise BadRequest(f"Invalid input: prefixes are not IPv{row.ip_version}.")
            new = ipam.parse_prefixes(body["prefixes"])
            # Existing subnets stay inside the pool: prefixes may only grow.
            if grown != new:
                raise BadRequest(
                    "Illegal update to prefixes: existing prefixes must be kept (a pool's "
                    "prefixes can only grow).",
                    type="IllegalSubnetPoolPrefixUpdate",
                )
            row.prefixes = [str(p) for p in new]
        _apply_lengths(row, body)
        for name in ("name", "description"):
            if name in body:
                setattr(row, name, str(body[name]))
        for name in ADMIN_ONLY:
            if name in body:
                setattr(row, name, body[name])
        if "default_quota" in body:
            row.default_quota = integer_attribute(body, "default_quota", None)
        await _check_single_default(session, row)
        row.revision_number += 1
        await session.flush()
        return one("subnetpool", subnetpool_view(row), request)


@routes.delete("/v2.0/subnetpools/{subnetpool_id}")
async def delete_subnetpool(request: Request) -> Response:
    network_service = service(request)
    pool_id = request.path_params["subnetpool_id"]
    async with network_service.db.session() as session:
        await lock_pool(session, pool_id)  # first: no allocation slips in before the delete
        row = await fetch(request, session, SubnetPool, pool_id, "subnet_pool")
        enforce(request, "delete", {"project_id": row.project_id})
        in_use = await session.scalar(
            select(func.count()).select_from(Subnet).where(Subnet.subnetpool_id == row.id)
        )
        if in_use:
            raise Conflict(
                f"Subnet pool {row.id} cannot be deleted: it has {in_use} subnet(s) allocated "
                "from it.",
                type="SubnetPoolInUse",
            )
        project_id = row.project_id
        await session.delete(row)
    await network_service.quotas.release(project_id, {"subnetpool": 1})
    return Response(status_code=204)
