"""``limit``/``marker`` paging and sorting over SQLAlchemy selects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from onestack.core.asgi.errors import BadRequest, NotFound


@dataclass
class Page:
    """One page of rows and whether more follow."""

    rows: list[Any]
    more: bool

    def next_link(self, request: Request, id_attr: str = "id") -> str | None:
        """The URL of the next page, keeping the other query parameters."""
        if not self.more or not self.rows:
            return None
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        params.append(("marker", str(getattr(self.rows[-1], id_attr))))
        return f"{request.url.replace(query='')}?{urlencode(params)}"


def read_limit(request: Request, maximum: int = 1000) -> int | None:
    """The ``limit`` query parameter, capped at ``maximum``; 400 when not a positive integer."""
    raw = request.query_params.get("limit")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"limit must be a non-negative integer, not {raw!r}.")
    return min(int(raw), maximum)


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    model: Any,
    *,
    limit: int | None,
    marker: str | None,
    sort: list[tuple[str, str]],
) -> Page:
    """Run ``query`` sorted by ``sort`` (key, asc|desc), starting after ``marker``'s row.

    The id is appended as the final tie-breaker so pages never skip or repeat rows.
    """
    keys = [(k, d) for k, d in sort if k != "id"] + [("id", dict(sort).get("id", "asc"))]
    for key, direction in keys:
        if not hasattr(model, key) or direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort key or direction: {key} {direction}.")
    if marker:
        marker_row = (await session.execute(query.where(model.id == marker))).scalars().first()
        if marker_row is None:
            raise NotFound(f"Marker {marker} could not be found.")
        clauses = []
        for i, (key, direction) in enumerate(keys):
            column = getattr(model, key)
            value = getattr(marker_row, key)
            equal_before = [getattr(model, k) == getattr(marker_row, k) for k, _ in keys[:i]]
            beyond = column > value if direction == "asc" else column < value
            clauses.append(and_(*equal_before, beyond))
        query = query.where(or_(*clauses))
    for key, direction in keys:
        column = getattr(model, key)
        query = query.order_by(column.asc() if direction == "asc" else column.desc())
    if limit is not None:
        query = query.limit(limit + 1)
    rows = list((await session.execute(query)).scalars().all())
    more = limit is not None and len(rows) > limit
    return Page(rows[:limit] if limit is not None else rows, more)
