"""The ASGI app factory every service uses: request ids, access logs, metrics, errors."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onestack.core.asgi.errors import APIError, ErrorFormatter, error_response

access_log = logging.getLogger("onestack.access")
error_log = logging.getLogger("onestack.error")

REQUESTS = Counter(
    "onestack_http_requests_total", "HTTP requests handled", ["service", "method", "status"]
)
LATENCY = Histogram(
    "onestack_http_request_duration_seconds",
    "HTTP request duration",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

REQUEST_ID_HEADER = b"x-openstack-request-id"


class RequestMiddleware:
    """Gives every request an id, logs one line for it, counts it, and turns crashes into 500s.

    The request id is ``req-<uuid>`` as OpenStack services issue, echoed in
    ``x-openstack-request-id``. A handler crash is logged with its traceback
    and answered in the service's error shape; it never leaks a stack trace.
    """

    def __init__(self, app: ASGIApp, service: str, formatter: ErrorFormatter):
        self.app = app
        self.service = service
        self.formatter = formatter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or f"req-{uuid.uuid4()}"
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0] != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except APIError as exc:
            # Raised by middleware (token checks), outside the routes' exception handlers.
            if not response_started:
                response = error_response(self.formatter, exc)
                await response(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not response_started:
                crash = APIError("An unexpected error prevented the request.")
                await error_response(self.formatter, crash)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            REQUESTS.labels(self.service, scope["method"], str(status)).inc()
            LATENCY.labels(self.service, scope["method"]).observe(elapsed)
            context = state.get("context")
            access_log.info(
                "request_id=%s service=%s user=%s project=%s method=%s path=%s status=%d "
                "duration_ms=%.1f",
                request_id,
                self.service,
                getattr(context, "user_id", None) or "-",
                getattr(context, "project_id", None) or "-",
                scope["method"],
                scope.get("root_path", "") + scope["path"],
                status,
                elapsed * 1000,
            )


async def healthcheck(_request: Request) -> Response:
    """``/healthcheck``: 200 while the process serves requests."""
    return PlainTextResponse("OK")


async def metrics(_request: Request) -> Response:
    """``/metrics``: Prometheus exposition of this process's counters."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def service_app(
    service: str,
    routes: Sequence[BaseRoute],
    formatter: ErrorFormatter,
    *,
    middleware: Sequence[tuple[type, dict[str, Any]]] = (),
    lifespan: Any = None,
) -> Starlette:
    """Build a service's ASGI app: its routes, error shape, and the common middleware.

    ``middleware`` entries (class, kwargs) wrap the routes inside the request
    middleware, so they see the request id and their errors are rendered too.
    """

    async def render_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        exc.extra.setdefault("request_id", request.scope.get("state", {}).get("request_id"))
        return error_response(formatter, exc)

    async def render_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "The resource could not be found.", 405: "Method not allowed."}.get(
            exc.status_code, exc.detail
        )
        return await render_api_error(request, APIError(message, status=exc.status_code))

    all_routes = [*routes, Route("/healthcheck", healthcheck), Route("/metrics", metrics)]
    stack = [Middleware(RequestMiddleware, service=service, formatter=formatter)]
    stack += [Middleware(cast(Any, cls), **kwargs) for cls, kwargs in middleware]
    return Starlette(
        routes=all_routes,
        middleware=stack,
        exception_handlers={APIError: render_api_error, HTTPException: render_http_exception},
        lifespan=lifespan,
    )
