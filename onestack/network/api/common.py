"""What every network handler shares: the service, the caller, policy, and Neutron's list
conventions (filters on any attribute, ``fields``, sorting, limit/marker with links)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Boolean, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import APIError, BadRequest, Conflict, NotFound
from onestack.core.asgi.paging import paginate, read_limit
from onestack.core.asgi.routing import service_root
from onestack.core.auth.context import RequestContext
from onestack.core.auth.middleware import request_context
from onestack.core.quota import QuotaExceeded
from onestack.network.service import NetworkService


def service(request: Request) -> NetworkService:
    network: NetworkService = request.app.state.network
    return network


def caller(request: Request) -> RequestContext:
    return request_context(request.scope.get("state", {}))


def enforce(request: Request, rule: str, target: dict[str, Any] | None = None) -> RequestContext:
    context = caller(request)
    service(request).policy.enforce(f"network:{rule}", context, target or {})
    return context


def is_admin(request: Request) -> bool:
    return service(request).policy.check("network:admin_attributes", caller(request))


def not_found(kind: str, ident: str) -> APIError:
    """Neutron's 404, e.g. ``NetworkNotFound``."""
    title = "".join(part.capitalize() for part in kind.split("_"))
    return NotFound(
        f"{title.replace('Ip', 'IP')} {ident} could not be found.", type=f"{title}NotFound"
    )


@asynccontextmanager
async def quota_held(request: Request, project_id: str, resource: str) -> AsyncIterator[None]:
    """One ``resource`` of the project's quota held for the block; Neutron's 409 if none left."""
    try:
        async with service(request).quotas.hold(project_id, {resource: 1}):
            yield
    except QuotaExceeded as exc:
        raise Conflict(
            f"Quota exceeded for resources: ['{resource}']. {exc}", type="OverQuota"
        ) from None


def body_of(data: Any, key: str) -> dict[str, Any]:
    """The ``{"<key>": {...}}`` member of a request body; 400 otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise BadRequest(f"Resource body required: a JSON object under '{key}'.")
    member: dict[str, Any] = data[key]
    return member


def scoped(query: Select[Any], model: Any, request: Request, shared: Any = None) -> Select[Any]:
    """Rows of the caller's project (or shared ones); admins see every project's."""
    if is_admin(request):
        return query
    project = caller(request).project_id
    condition = model.project_id == project
    return query.where(or_(condition, shared) if shared is not None else condition)


async def fetch(
    request: Request, session: AsyncSession, model: Any, ident: str, kind: str, shared: Any = None
) -> Any:
    """One row the caller may see; Neutron's 404 otherwise."""
    query = scoped(select(model).where(model.id == ident), model, request, shared)
    row = (await session.execute(query)).scalars().first()
    if row is None:
        raise not_found(kind, ident)
    return row


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise BadRequest(f"Invalid boolean filter value {value!r}.")


async def list_response(
    request: Request,
    query: Select[Any],
    model: Any,
    collection: str,
    view: Callable[[Any], dict[str, Any]],
    columns: dict[str, str],
) -> Response:
    """A Neutron list: ``columns`` maps API attribute names to model columns for filtering."""
    params = request.query_params
    for name in set(params.keys()) - {
        "fields",
        "sort_key",
        "sort_dir",
        "limit",
        "marker",
        "page_reverse",
    }:
        values = params.getlist(name)
        if name in ("tags", "tags-any", "not-tags", "not-tags-any"):
            continue
        column_name = columns.get(name)
        if column_name is None:
            continue  # Neutron ignores filters on attributes it does not know
        column = getattr(model, column_name)
        if isinstance(column.type, Boolean):
            query = query.where(column.in_([_bool(v) for v in values]))
        else:
            query = query.where(column.in_(values))
    sort_keys = [columns.get(k, "") for k in params.getlist("sort_key")]
    if "" in sort_keys:
        raise BadRequest("Invalid sort key.")
    directions = params.getlist("sort_dir") or ["asc"]
    sort = [(k, directions[min(i, len(directions) - 1)]) for i, k in enumerate(sort_keys)]
    limit = read_limit(request)
    async with service(request).db.session() as session:
        page = await paginate(
            session,
            query,
            model,
            limit=limit,
            marker=params.get("marker"),
            sort=sort or [("created_at", "asc")],
        )
    rows = [row for row in page.rows if _tags_match(request, getattr(row, "tags", None) or [])]
    fields = params.getlist("fields")
    items = [_select_fields(view(row), fields) for row in rows]
    body: dict[str, Any] = {collection: items}
    if page.more and page.rows:
        query_params = [(k, v) for k, v in params.multi_items() if k != "marker"]
        query_params.append(("marker", page.rows[-1].id))
        href = f"{service_root(request)}/v2.0/{collection}?{urlencode(query_params)}"
        body[f"{collection}_links"] = [{"rel": "next", "href": href}]
    return JSONResponse(body)


def _tags_match(request: Request, tags: list[str]) -> bool:
    params = request.query_params
    have = set(tags)

    def wanted(name: str) -> set[str]:
        return {t for value in params.getlist(name) for t in value.split(",") if t}

    return (
        wanted("tags") <= have
        and (not wanted("tags-any") or bool(wanted("tags-any") & have))
        and not (wanted("not-tags") and wanted("not-tags") <= have)
        and not (wanted("not-tags-any") & have)
    )


def _select_fields(item: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k in fields} if fields else item


def one(key: str, item: dict[str, Any], request: Request, status: int = 200) -> Response:
    """A single-resource response honouring ``fields``."""
    return JSONResponse(
        {key: _select_fields(item, request.query_params.getlist("fields"))}, status_code=status
    )
