"""``/v3/messages`` (3.3): why an asynchronous request failed, for the project to read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable
from onestack.volume.api.common import (
    each,
    enforce,
    fetch,
    iso,
    links,
    list_collection,
    owner,
    project_scope,
    service,
)
from onestack.volume.models import Message

routes = RouteTable()

SORT_KEYS = {"created_at": "created_at", "id": "id", "event_id": "event_id"}


def _view(request: Request, message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "message_level": message.message_level,
        "event_id": message.event_id,
        "user_message": message.user_message,
        "resource_type": message.resource_type,
        "resource_uuid": message.resource_uuid,
        "request_id": message.request_id,
        "created_at": iso(message.created_at),
        "guaranteed_until": iso(message.expires_at),
        "links": links(request, "messages", message.id),
    }


@routes.get("/v3/messages")
async def list_messages(request: Request) -> Response:
    query = project_scope(request, select(Message), Message)
    for name in ("resource_uuid", "resource_type", "event_id", "message_level"):
        if name in request.query_params:
            query = query.where(getattr(Message, name) == request.query_params[name])
    return await list_collection(request, "messages", query, Message, SORT_KEYS, each(_view))


@routes.get("/v3/messages/{message_id}")
async def show_message(request: Request) -> Response:
    async with service(request).db.session() as session:
        message = await fetch(
            request, session, Message, request.path_params["message_id"], "Message"
        )
    enforce(request, "read", owner(message))
    return JSONResponse({"message": _view(request, message)})


@routes.delete("/v3/messages/{message_id}")
async def delete_message(request: Request) -> Response:
    async with service(request).db.session() as session:
        message = await fetch(
            request, session, Message, request.path_params["message_id"], "Message"
        )
        enforce(request, "write", owner(message))
        await session.delete(message)
    return Response(status_code=204)
