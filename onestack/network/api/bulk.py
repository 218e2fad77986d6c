"""Neutron's bulk create: ``{"networks": [{...}, ...]}`` made all or nothing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Handler = Callable[[Request], Awaitable[Response]]


def is_bulk(data: Any, plural: str) -> bool:
    """Whether a create body lists several resources under their plural key."""
    return isinstance(data, dict) and isinstance(data.get(plural), list)


def _sub_request(
    request: Request, method: str, body: Any, path_params: dict[str, str] | None = None
) -> Request:
    """``request`` (same caller, same app) asking for one resource with ``body``."""
    raw = json.dumps(body).encode() if body is not None else b""
    scope = {**request.scope, "method": method, "path_params": path_params or {}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(scope, receive)


async def bulk_create(
    request: Request,
    items: list[Any],
    singular: str,
    create: Handler,
    delete: Handler,
    id_param: str,
) -> Response:
    """Each item through ``create``; when one fails, those made are deleted and its error
    stands, as Neutron's bulk create is one transaction."""
    created: list[dict[str, Any]] = []
    try:
        for item in items:
            response = await create(_sub_request(request, "POST", {singular: item}))
            created.append(json.loads(bytes(response.body))[singular])
    except Exception:
        for resource in reversed(created):
            await delete(_sub_request(request, "DELETE", None, {id_param: resource["id"]}))
        raise
    return JSONResponse({f"{singular}s": created}, status_code=201)
