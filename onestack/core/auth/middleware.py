"""Token middleware: turns ``X-Auth-Token`` into a :class:`RequestContext`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from onestack.core.asgi.errors import Unauthorized
from onestack.core.asgi.routing import route_path
from onestack.core.auth.context import RequestContext, TokenData


class TokenValidator(Protocol):
    """Something that turns a token string into what it establishes."""

    async def validate(self, token: str) -> TokenData:
        """Return the token's data; raise :class:`Unauthorized` when it is not valid."""
        ...


class TokenMiddleware:
    """Validates the caller's token and stores the context in ``scope['state']``.

    Requests without a token continue anonymously when ``is_public`` says the
    path allows it (version documents, token issue); otherwise they get 401.
    """

    def __init__(
        self,
        app: ASGIApp,
        validator: TokenValidator,
        is_public: Callable[[str, str], bool] = lambda method, path: False,
    ):
        self.app = app
        self.validator = validator
        self.is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        context = RequestContext(request_id=state.get("request_id", ""))
        token = None
        for name, value in scope["headers"]:
            if name == b"x-auth-token":
                token = value.decode("latin-1")
                break
        public = self.is_public(scope["method"], route_path(scope))
        if token:
            try:
                context.token = await self.validator.validate(token)
                context.auth_token = token
            except Unauthorized:
                if not public:
                    raise
        elif not public:
            raise Unauthorized("The request you have made requires authentication.")
        state["context"] = context
        await self.app(scope, receive, send)


def request_context(scope_state: dict) -> RequestContext:
    """The context the token middleware stored for this request."""
    context = scope_state.get("context")
    return context if isinstance(context, RequestContext) else RequestContext()
