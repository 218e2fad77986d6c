"""``/resource_providers/{uuid}/usages`` and ``/usages?project_id=`` (usage by project, user
and, from 1.38, consumer type)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import distinct, func, select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import (
    at_least,
    check_query,
    enforce,
    find_provider,
    json_response,
    require_version,
    service,
)
from onestack.placement.models import Allocation, Consumer, Inventory

routes = RouteTable()

CONSUMER_TYPE = re.compile(r"^[A-Z0-9_]+$")


@routes.get("/resource_providers/{uuid}/usages")
async def provider_usages(request: Request) -> Response:
    enforce(request, "resource_providers:usages:list")
    placement = service(request)
    async with placement.db.session() as session:
        provider = await find_provider(session, request.path_params["uuid"])
        rows = (
            await session.execute(
                select(Inventory.resource_class_id, Inventory.used).where(
                    Inventory.resource_provider_id == provider.id
                )
            )
        ).all()
    names = await placement.resource_classes.names_of(cls for cls, _ in rows)
    return json_response(
        request,
        {
            "resource_provider_generation": provider.generation,
            "usages": {names[cls]: used for cls, used in rows},
        },
    )


@routes.get("/usages")
async def project_usages(request: Request) -> Response:
    require_version(request, 9)
    params = request.query_params
    allowed = {"project_id", "user_id"} | ({"consumer_type"} if at_least(request, 38) else set())
    check_query(request, allowed)
    project_id = params.get("project_id")
    if not project_id:
        raise BadRequest("Invalid query string parameters: 'project_id' is a required property")
    enforce(request, "usages", {"project_id": project_id})
    user_id = params.get("user_id")
    consumer_type = params.get("consumer_type")
    if consumer_type is not None and not (
        consumer_type in ("all", "unknown") or CONSUMER_TYPE.match(consumer_type)
    ):
        raise BadRequest(
            f"Invalid query string parameters: '{consumer_type}' does not match "
            "'^[A-Z0-9_]+$|^all|^unknown$'"
        )
    conditions: list[Any] = [Consumer.project_id == project_id]
    if user_id:
        conditions.append(Consumer.user_id == user_id)
    if consumer_type == "unknown":
        conditions.append(Consumer.consumer_type.is_(None))
    elif consumer_type not in (None, "all"):
        conditions.append(Consumer.consumer_type == consumer_type)
    by_type = at_least(request, 38)
    group = Consumer.consumer_type if by_type and consumer_type is None else None
    placement = service(request)
    async with placement.db.session() as session:
        columns: list[Any] = [Allocation.resource_class_id, func.sum(Allocation.used)]
        query = select(*columns, *([group] if group is not None else []))
        query = query.join(Consumer, Consumer.id == Allocation.consumer_id).where(*conditions)
        query = query.group_by(
            Allocation.resource_class_id, *([group] if group is not None else [])
        )
        sums: list[Any] = list((await session.execute(query)).all())
        counts: dict[str | None, int] = {}
        if by_type:
            count_query = select(func.count(distinct(Allocation.consumer_id)))
            if group is not None:
                count_query = count_query.add_columns(group).group_by(group)
            count_query = count_query.join(Consumer, Consumer.id == Allocation.consumer_id)
            counted: list[Any] = list(await session.execute(count_query.where(*conditions)))
            for row in counted:
                counts[row[1] if group is not None else None] = row[0]
    names = await placement.resource_classes.names_of(row[0] for row in sums)
    if not by_type:
        return json_response(request, {"usages": {names[row[0]]: int(row[1]) for row in sums}})
    usages: dict[str, dict[str, int]] = {}
    for row in sums:
        kind = row[2] if group is not None else None
        key = _type_key(kind, consumer_type)
        entry = usages.setdefault(key, {"consumer_count": counts.get(kind, 0)})
        entry[names[row[0]]] = int(row[1])
    return json_response(request, {"usages": usages})


def _type_key(kind: str | None, asked: str | None) -> str:
    if asked is not None:
        return asked
    return kind or "unknown"
