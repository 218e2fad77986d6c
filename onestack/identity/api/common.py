"""Helpers every identity handler uses: the service, the caller, policy, lookups."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import NotFound
from onestack.core.auth.context import RequestContext
from onestack.core.auth.middleware import request_context
from onestack.identity.service import IdentityService

T = TypeVar("T")


def service(request: Request) -> IdentityService:
    """The identity service this app serves."""
    identity: IdentityService = request.app.state.identity
    return identity


def caller(request: Request) -> RequestContext:
    """Who is calling."""
    return request_context(request.scope.get("state", {}))


def enforce(request: Request, rule: str, target: dict[str, Any] | None = None) -> RequestContext:
    """Check ``identity:<rule>`` for the caller; return the caller."""
    context = caller(request)
    full_target = {"domain_id": context.token.domain_id if context.token else None}
    full_target.update(target or {})
    service(request).policy.enforce(f"identity:{rule}", context, full_target)
    return context


async def get_or_404(session: AsyncSession, model: type[T], ident: str, kind: str) -> T:
    """The row ``ident`` of ``model``; Keystone's 404 when absent."""
    row = await session.get(model, ident)
    if row is None:
        raise NotFound(f"Could not find {kind}: {ident}.")
    return row


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def no_content() -> Response:
    return Response(status_code=204)


async def committed(request: Request) -> None:
    """After a write commits: drop caches here and in the other identity processes."""
    await service(request).tokens.after_change()
