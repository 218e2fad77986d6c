"""``/v2/images/{id}/members``: sharing an image with other projects."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import BadRequest, Conflict, Forbidden, NotFound
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.core.db import utcnow
from onestack.image import views
from onestack.image.api.common import caller, enforce, get_image, service
from onestack.image.models import ImageMember

routes = RouteTable()
STATUSES = ("pending", "accepted", "rejected")


def _target(owner: str | None, member_id: str | None) -> dict[str, str | None]:
    return {"owner": owner, "project_id": owner, "member_id": member_id}


@routes.post("/v2/images/{image_id}/members")
async def add_member(request: Request) -> Response:
    body = await json_body(request)
    member_id = body.get("member") if isinstance(body, dict) else None
    if not isinstance(member_id, str) or not member_id:
        raise BadRequest('A body {"member": "<project id>"} is expected.')
    async with service(request).db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "add_member", _target(image.owner, member_id))
        if image.visibility != "shared":
            raise Forbidden(
                f"Image {image.id} is {image.visibility}: only shared images can have members."
            )
        if await session.get(ImageMember, (image.id, member_id)) is not None:
            raise Conflict(f"Project {member_id} is already a member of image {image.id}.")
        row = ImageMember(image_id=image.id, member_id=member_id, status="pending")
        session.add(row)
        await session.flush()
        return JSONResponse(views.member(row))


@routes.get("/v2/images/{image_id}/members")
async def list_members(request: Request) -> Response:
    context = caller(request)
    async with service(request).db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "get_members", _target(image.owner, context.project_id))
        query = select(ImageMember).where(ImageMember.image_id == image.id)
        if not context.is_admin and image.owner != context.project_id:
            query = query.where(ImageMember.member_id == context.project_id)
        rows = (await session.execute(query.order_by(ImageMember.created_at))).scalars()
        members = [views.member(m) for m in rows]
    return JSONResponse({"members": members, "schema": "/v2/schemas/members"})


async def _member(request: Request, session: AsyncSession, image_id: str) -> ImageMember:
    row: ImageMember | None = await session.get(
        ImageMember, (image_id, request.path_params["member_id"])
    )
    if row is None:
        raise NotFound(f"Project {request.path_params['member_id']} is not a member of this image.")
    return row


@routes.get("/v2/images/{image_id}/members/{member_id}")
async def show_member(request: Request) -> Response:
    async with service(request).db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "get_members", _target(image.owner, request.path_params["member_id"]))
        row = await _member(request, session, image.id)
        return JSONResponse(views.member(row))


@routes.put("/v2/images/{image_id}/members/{member_id}")
async def update_member(request: Request) -> Response:
    body = await json_body(request)
    status = body.get("status") if isinstance(body, dict) else None
    if status not in STATUSES:
        raise BadRequest(f"Invalid member status {status!r}: one of {', '.join(STATUSES)}.")
    async with service(request).db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
        row = await _member(request, session, image.id)
        # Only the member project decides whether it accepts an image.
        enforce(request, "modify_member", _target(image.owner, row.member_id))
        if caller(request).project_id != row.member_id:
            raise Forbidden("Only the member project can accept or reject a shared image.")
        row.status = status
        row.updated_at = utcnow()
        return JSONResponse(views.member(row))


@routes.delete("/v2/images/{image_id}/members/{member_id}")
async def delete_member(request: Request) -> Response:
    async with service(request).db.session() as session:
        image = await get_image(request, session, request.path_params["image_id"])
        enforce(request, "delete_member", _target(image.owner, request.path_params["member_id"]))
        row = await _member(request, session, image.id)
        await session.delete(row)
    return Response(status_code=204)
