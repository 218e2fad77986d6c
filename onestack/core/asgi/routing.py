"""A route table that handler modules fill with decorators: path → method → handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

Handler = Callable[[Request], Awaitable[Response]]


class RouteTable:
    """Collects the routes of one API module, in declaration order."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str) -> Callable[[Handler], Handler]:
        """Register the decorated handler for ``method`` on ``path``."""

        def register(handler: Handler) -> Handler:
            methods = [method, "HEAD"] if method == "GET" else [method]
            self.routes.append(Route(path, handler, methods=methods))
            return handler

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self.add("GET", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self.add("POST", path)

    def put(self, path: str) -> Callable[[Handler], Handler]:
        return self.add("PUT", path)

    def patch(self, path: str) -> Callable[[Handler], Handler]:
        return self.add("PATCH", path)

    def delete(self, path: str) -> Callable[[Handler], Handler]:
        return self.add("DELETE", path)

    def head(self, path: str) -> Callable[[Handler], Handler]:
        return self.add("HEAD", path)


def route_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted (``/v3/...`` under ``/identity``)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def service_root(request: Request) -> str:
    """The absolute URL where this service's app is mounted (``http://h:8000/identity``)."""
    base = str(request.base_url).rstrip("/")
    mounted = request.scope.get("root_path", "")
    top = request.scope.get("app_root_path", "")
    return base + mounted[len(top) :] if mounted.startswith(top) else base
