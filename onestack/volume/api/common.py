"""What every block storage handler shares: the service, the caller, the microversion,
policy, tenancy, Cinder's error messages, and its list conventions (filters, sorting,
limit/marker/offset paging with ``*_links``, ``all_tenants``, ``with_count``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import APIError, BadRequest, NotFound
from onestack.core.asgi.microversion import Version
from onestack.core.asgi.paging import paginate
from onestack.core.asgi.routing import service_root
from onestack.core.auth.context import RequestContext
from onestack.core.auth.middleware import request_context
from onestack.volume.service import VolumeService

TRUE_STRINGS = ("true", "1", "yes", "on", "t", "y")
FALSE_STRINGS = ("false", "0", "no", "off", "f", "n")


def service(request: Request) -> VolumeService:
    volume: VolumeService = request.app.state.volume
    return volume


def caller(request: Request) -> RequestContext:
    return request_context(request.scope.get("state", {}))


def version(request: Request) -> Version:
    """The microversion the request negotiated (3.0 when it asked for none)."""
    found = request.scope.get("state", {}).get("microversion")
    return found if isinstance(found, Version) else Version(3, 0)


def at_least(request: Request, text: str) -> bool:
    """Whether the request's microversion is ``text`` or newer."""
    return version(request) >= Version.parse(text)


def url_project(request: Request) -> str | None:
    """The project id the URL carried (``/v3/{project_id}/...``), if any."""
    found = request.scope.get("state", {}).get("url_project_id")
    return found if isinstance(found, str) else None


def enforce(request: Request, rule: str, target: dict[str, Any] | None = None) -> RequestContext:
    """Check ``volume:<rule>`` for the caller; the URL's project must be the token's."""
    context = caller(request)
    service(request).policy.enforce(f"volume:{rule}", context, target or {})
    project = url_project(request)
    if project and context.project_id and project != context.project_id:
        raise BadRequest(
            f"Malformed request url: URL's project_id '{project}' doesn't match "
            f"Context's project_id '{context.project_id}'"
        )
    return context


def is_admin(request: Request) -> bool:
    return service(request).policy.check("volume:admin", caller(request))


def owner(row: Any) -> dict[str, Any]:
    """The policy target of a project-owned row."""
    return {"project_id": row.project_id}


def own(request: Request) -> dict[str, Any]:
    """The policy target of the caller's own project."""
    return {"project_id": caller(request).project_id}


def not_found(kind: str, ident: str) -> APIError:
    """Cinder's 404: ``Volume 1234 could not be found.``"""
    return NotFound(f"{kind} {ident} could not be found.")


def invalid(message: str) -> APIError:
    """Cinder's 400 for bad input: ``Invalid input received: ...``."""
    return BadRequest(f"Invalid input received: {message}")


def body_of(data: Any, key: str) -> dict[str, Any]:
    """The ``{"<key>": {...}}`` member of a request body; 400 otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise BadRequest(f"Missing required element '{key}' in request body.")
    member: dict[str, Any] = data[key]
    return member


def text_field(body: dict[str, Any], name: str, limit: int = 255) -> str | None:
    """An optional string of at most ``limit`` characters (None allowed)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise invalid(f"{name} must be a string of at most {limit} characters.")
    return value


def as_bool(value: Any, name: str) -> bool:
    """Cinder's boolean parsing (``true``, ``"True"``, ``1``, ``"yes"``...); 400 otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str | int) and str(value).strip().lower() in TRUE_STRINGS:
        return True
    if isinstance(value, str | int) and str(value).strip().lower() in FALSE_STRINGS:
        return False
    raise invalid(f"{name} must be a boolean, not {value!r}.")


def as_size(value: Any, name: str = "size") -> int:
    """A size in GiB: a positive integer (or its string); 400 otherwise."""
    if isinstance(value, bool):
        raise invalid(f"{name} must be an integer greater than 0.")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise invalid(f"{name} must be an integer (in GiB) greater than 0, not {value!r}.")
    if value > 2**31 - 1:
        raise invalid(f"{name} {value} is too large.")
    return value


def metadata_field(value: Any, name: str = "metadata") -> dict[str, str]:
    """Key/value metadata: strings, keys 1-255 and values up to 255 characters."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object of string keys and values.")
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise invalid(f"{name} keys must be strings of 1 to 255 characters.")
        if not isinstance(item, str) or len(item) > 255:
            raise invalid(f"{name} values must be strings of at most 255 characters.")
    return dict(value)


def iso(value: dt.datetime | None) -> str | None:
    """Cinder's time format: ``2025-01-15T08:10:54.821577`` (UTC, no offset)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def links(request: Request, collection: str, ident: str) -> list[dict[str, str]]:
    """``self`` and ``bookmark`` links, with the project in the URL as Cinder writes them."""
    root = service_root(request)
    project = url_project(request) or caller(request).project_id or ""
    prefix = f"/{project}" if project else ""
    return [
        {"href": f"{root}/v3{prefix}/{collection}/{ident}", "rel": "self"},
        {"href": f"{root}{prefix}/{collection}/{ident}", "rel": "bookmark"},
    ]


async def fetch(request: Request, session: AsyncSession, model: Any, ident: str, kind: str) -> Any:
    """One row of the caller's project (any project for admins); Cinder's 404 otherwise."""
    query = select(model).where(model.id == ident)
    if not is_admin(request):
        query = query.where(model.project_id == caller(request).project_id)
    row = (await session.execute(query)).scalars().first()
    if row is None:
        raise not_found(kind, ident)
    return row


def project_scope(
    request: Request, query: Select[Any], model: Any, column: Any = None
) -> Select[Any]:
    """The caller's project's rows; an admin's ``all_tenants`` (or ``project_id``) widens it.

    ``column`` is the owning project's column when it is not ``model.project_id``.
    """
    params = request.query_params
    project = model.project_id if column is None else column
    if is_admin(request):
        if "project_id" in params and params.get("all_tenants") is None:
            return query.where(project == params["project_id"])
        if params.get("all_tenants") is not None and as_bool(
            params.get("all_tenants") or "true", "all_tenants"
        ):
            if "project_id" in params:
                return query.where(project == params["project_id"])
            return query
    return query.where(project == caller(request).project_id)


def read_sort(request: Request, allowed: dict[str, str]) -> list[tuple[str, str]]:
    """``sort=key:dir,...`` or ``sort_key``/``sort_dir``, mapped to model columns."""
    params = request.query_params
    pairs: list[tuple[str, str]] = []
    if "sort" in params:
        for item in params["sort"].split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
    elif "sort_key" in params or "sort_dir" in params:
        keys = params.get("sort_key", "created_at").split(",")
        directions = params.get("sort_dir", "desc").split(",")
        pairs = [(k, directions[min(i, len(directions) - 1)]) for i, k in enumerate(keys)]
    sort = []
    for key, direction in pairs:
        if key not in allowed or direction.lower() not in ("asc", "desc"):
            raise invalid(f"Invalid sort key or direction: {key}:{direction}.")
        sort.append((allowed[key], direction.lower()))
    return sort or [("created_at", "desc")]


def read_paging(request: Request) -> tuple[int | None, str | None, int]:
    """``limit``, ``marker`` and ``offset``; 400 for values that are not numbers."""
    params = request.query_params
    limit = offset = None
    for name in ("limit", "offset"):
        raw = params.get(name)
        if raw is None:
            continue
        if not raw.isdigit():
            raise invalid(f"{name} must be a non-negative integer, not {raw!r}.")
        if name == "limit":
            limit = min(int(raw), 1000)
        else:
            offset = int(raw)
    return limit, params.get("marker"), offset or 0


async def list_rows(
    request: Request,
    query: Select[Any],
    model: Any,
    sort_keys: dict[str, str],
    keep: Callable[[Any], bool] | None = None,
) -> tuple[list[Any], bool, int | None]:
    """Rows of a list request: sorted, paged; (rows, more follow, total when asked)."""
    limit, marker, offset = read_paging(request)
    sort = read_sort(request, sort_keys)
    count = None
    async with service(request).db.session() as session:
        if at_least(request, "3.45") and as_bool(
            request.query_params.get("with_count", "false"), "with_count"
        ):
            count = int(
                await session.scalar(select(func.count()).select_from(query.subquery())) or 0
            )
        if offset:
            query = query.offset(offset)
        page = await paginate(session, query, model, limit=limit, marker=marker, sort=sort)
    rows = [r for r in page.rows if keep is None or keep(r)]
    return rows, page.more, count


def list_response(
    request: Request,
    collection: str,
    items: list[dict[str, Any]],
    rows: list[Any],
    more: bool,
    count: int | None,
) -> Response:
    """``{collection: [...], collection_links: [next], count}`` as Cinder answers lists."""
    body: dict[str, Any] = {collection: items}
    if more and rows:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        params.append(("marker", rows[-1].id))
        href = str(request.url.replace(query=urlencode(params)))
        body[f"{collection}_links"] = [{"href": href, "rel": "next"}]
    if count is not None:
        body["count"] = count
    return JSONResponse(body)


Render = Callable[[Request, list[Any]], Awaitable[list[dict[str, Any]]]]


async def list_collection(
    request: Request,
    collection: str,
    query: Select[Any],
    model: Any,
    sort_keys: dict[str, str],
    render: Render,
) -> Response:
    """A whole list request of the caller's project: policy, paging, bodies, links."""
    enforce(request, "read", own(request))
    rows, more, count = await list_rows(request, query, model, sort_keys)
    items = await render(request, rows)
    return list_response(request, collection, items, rows, more, count)


def each(view: Callable[[Request, Any], dict[str, Any]]) -> Render:
    """A list renderer from a one-row view."""

    async def render(request: Request, rows: list[Any]) -> list[dict[str, Any]]:
        return [view(request, row) for row in rows]

    return render


def filter_value(raw: str) -> tuple[str, str]:
    """A 3.60 time comparison ``gt:2025-01-01T00:00:00`` → (op, value); plain → ("eq", raw)."""
    op, sep, value = raw.partition(":")
    if sep and op in ("gt", "gte", "lt", "lte", "eq", "neq"):
        return op, value
    return "eq", raw


def time_filter(column: Any, raw: str) -> Any:
    """A SQL condition for a time comparison filter; 400 for a bad time."""
    op, text = filter_value(raw)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid time {text!r}.") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return {
        "gt": column > when,
        "gte": column >= when,
        "lt": column < when,
        "lte": column <= when,
        "eq": column == when,
        "neq": column != when,
    }[op]
