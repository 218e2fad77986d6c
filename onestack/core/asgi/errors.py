"""HTTP errors raised by API handlers, rendered in each service's own error shape."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response


class APIError(Exception):
    """An error with an HTTP status; the service's formatter renders the body."""

    status = 500

    def __init__(self, message: str | None = None, *, status: int | None = None, **extra: Any):
        if status is not None:
            self.status = status
        self.message = message or HTTPStatus(self.status).phrase
        self.extra = extra
        super().__init__(self.message)

    @property
    def title(self) -> str:
        """The reason phrase of the status."""
        return HTTPStatus(self.status).phrase


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class MethodNotAllowed(APIError):
    status = 405


class NotAcceptable(APIError):
    status = 406


class Conflict(APIError):
    status = 409


class Gone(APIError):
    status = 410


class PayloadTooLarge(APIError):
    status = 413


class UnsupportedMediaType(APIError):
    status = 415


class NotImplementedYet(APIError):
    status = 501


# A formatter turns (error) into the JSON body a service's clients expect, or into a whole
# response for services whose errors are not JSON (Swift's text pages, S3's XML).
ErrorFormatter = Callable[[APIError], "dict[str, Any] | Response"]


def error_response(formatter: ErrorFormatter, err: APIError) -> Response:
    """The response for ``err`` in the service's shape, with the error's extra headers."""
    body = formatter(err)
    if isinstance(body, Response):
        return body
    return JSONResponse(body, status_code=err.status, headers=err.extra.get("headers"))


def keystone_error(err: APIError) -> dict[str, Any]:
    """Keystone: ``{"error": {"code", "title", "message"}}``."""
    return {"error": {"code": err.status, "title": err.title, "message": err.message}}


_NOVA_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    501: "notImplemented",
}


def nova_error(err: APIError) -> dict[str, Any]:
    """Nova and Cinder: ``{"itemNotFound": {"code", "message"}}`` and friends."""
    key = _NOVA_KEYS.get(err.status, "computeFault")
    return {key: {"code": err.status, "message": err.message}}


def placement_error(err: APIError) -> dict[str, Any]:
    """Placement: ``{"errors": [{"status", "title", "detail", "request_id", "code"}]}``."""
    entry: dict[str, Any] = {
        "status": err.status,
        "title": err.title,
        "detail": err.message,
        "request_id": err.extra.get("request_id"),
    }
    if "code" in err.extra:
        entry["code"] = err.extra["code"]
    return {"errors": [entry]}


def neutron_error(err: APIError) -> dict[str, Any]:
    """Neutron: ``{"NeutronError": {"type", "message", "detail"}}``."""
    kind = err.extra.get("type") or err.title.replace(" ", "")
    return {"NeutronError": {"type": kind, "message": err.message, "detail": ""}}


def glance_error(err: APIError) -> dict[str, Any]:
    """Glance (webob): ``{"code": "404 Not Found", "title": "Not Found", "message": …}``."""
    return {"code": f"{err.status} {err.title}", "title": err.title, "message": err.message}
