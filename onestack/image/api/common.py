"""Helpers every image handler uses: the service, the caller, policy, visibility rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request

from onestack.core.asgi.errors import NotFound
from onestack.core.auth.context import RequestContext
from onestack.core.auth.middleware import request_context
from onestack.image.models import Image, ImageMember
from onestack.image.service import ImageService


def service(request: Request) -> ImageService:
    images: ImageService = request.app.state.images
    return images


def caller(request: Request) -> RequestContext:
    return request_context(request.scope.get("state", {}))


def enforce(request: Request, rule: str, target: dict[str, Any] | None = None) -> RequestContext:
    """Check ``image:<rule>`` for the caller; return the caller."""
    context = caller(request)
    service(request).policy.enforce(f"image:{rule}", context, target or {})
    return context


def check(request: Request, rule: str, target: dict[str, Any] | None = None) -> bool:
    return service(request).policy.check(f"image:{rule}", caller(request), target or {})


def visible_to(context: RequestContext) -> ColumnElement[bool]:
    """Images a project can see: its own, public, community, and those shared with it."""
    project = context.project_id
    shared_with = exists().where(ImageMember.image_id == Image.id, ImageMember.member_id == project)
    return or_(
        Image.owner == project,
        Image.visibility.in_(("public", "community")),
        and_(Image.visibility == "shared", shared_with),
    )


async def get_image(request: Request, session: AsyncSession, image_id: str) -> Image:
    """An image the caller may see; 404 (never 403) when it may not, as Glance answers."""
    context = caller(request)
    query = select(Image).where(Image.id == image_id)
    if not context.is_admin:
        query = query.where(visible_to(context))
    row = (await session.execute(query)).scalars().first()
    if row is None:
        raise NotFound(f"No image found with ID {image_id}")
    return row


def owner_target(row: Image) -> dict[str, Any]:
    return {"owner": row.owner, "project_id": row.owner}
