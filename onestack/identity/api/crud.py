"""Filtering, updating and duplicate detection shared by the identity resources."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Boolean, Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from onestack.core.asgi.errors import Conflict
from onestack.core.asgi.request import query_bool


def filtered(
    query: Select[Any], model: Any, request: Request, names: tuple[str, ...]
) -> Select[Any]:
    """``query`` narrowed by the equality filters named in ``names`` found in the query string."""
    for name in names:
        if name not in request.query_params:
            continue
        column = getattr(model, name)
        if isinstance(column.type, Boolean):
            query = query.where(column.is_(query_bool(request, name)))
        else:
            query = query.where(column == request.query_params[name])
    return query


def apply_changes(row: Any, body: BaseModel, fields: tuple[str, ...]) -> dict[str, Any]:
    """Copy the fields present in ``body`` onto ``row``; returns the other (extra) attributes."""
    given = body.model_dump(exclude_unset=True)
    for name in fields:
        if name in given and given[name] is not None:
            setattr(row, name, given[name])
    return {k: v for k, v in given.items() if k not in fields and k not in ("id", "links")}


async def flush_unique(session: AsyncSession, kind: str, name: str | None) -> None:
    """Flush pending writes; a unique-constraint clash becomes Keystone's 409."""
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(
            f"Conflict occurred attempting to store {kind} - "
            f"Duplicate entry found with name {name}."
        ) from None
