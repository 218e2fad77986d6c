"""``/os-migrations``: resizes, cold and live migrations and evacuations of every project
(``openstack server migration list``); admin only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import at_least, enforce, limit_marker, own, service
from onestack.compute.models import Flavor, Migration
from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()
FILTERS = ("status", "instance_uuid", "source_compute", "migration_type")


def _iso(value: Any) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value is not None else None


def _view(request: Request, migration: Migration, flavor_ids: dict[str, int]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": migration.id,
        "instance_uuid": migration.instance_uuid,
        "source_compute": migration.source_compute,
        "source_node": migration.source_node,
        "dest_compute": migration.dest_compute,
        "dest_node": migration.dest_node,
        "dest_host": migration.dest_host,
        "status": migration.status,
        "old_instance_type_id": flavor_ids.get(migration.old_flavor_id or ""),
        "new_instance_type_id": flavor_ids.get(migration.new_flavor_id or ""),
        "created_at": _iso(migration.created_at),
        "updated_at": _iso(migration.updated_at),
    }
    if at_least(request, "2.23"):
        view["migration_type"] = migration.migration_type
        view["links"] = []
    if at_least(request, "2.59"):
        view["uuid"] = migration.uuid
    if at_least(request, "2.80"):
        view["user_id"] = migration.user_id
        view["project_id"] = migration.project_id
    return view


@routes.get("/v2.1/os-migrations")
async def list_migrations(request: Request) -> Response:
    enforce(request, "admin", own(request))
    params = request.query_params
    query = select(Migration).order_by(Migration.created_at.desc(), Migration.id.desc())
    for name in FILTERS:
        if name in params:
            query = query.where(getattr(Migration, name) == params[name])
    if "host" in params:
        host = params["host"]
        query = query.where((Migration.source_compute == host) | (Migration.dest_compute == host))
    if at_least(request, "2.80"):
        for name in ("user_id", "project_id"):
            if name in params:
                query = query.where(getattr(Migration, name) == params[name])
    limit, marker = limit_marker(request) if at_least(request, "2.59") else (None, None)
    async with service(request).db.session() as session:
        migrations = list((await session.execute(query)).scalars())
        flavors = {
            row.flavorid: row.id
            for row in await session.execute(select(Flavor.flavorid, Flavor.id))
        }
    if marker is not None:
        uuids = [migration.uuid for migration in migrations]
        if marker not in uuids:
            raise BadRequest(f"Marker {marker} could not be found.")
        migrations = migrations[uuids.index(marker) + 1 :]
    if limit is not None:
        migrations = migrations[:limit]
    return JSONResponse(
        {"migrations": [_view(request, migration, flavors) for migration in migrations]}
    )
