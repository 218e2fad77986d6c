"""Swift's error pages: ``<html><h1>Not Found</h1><p>…</p></html>`` as text/html."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import Response

from onestack.core.asgi.errors import APIError

EXPLANATIONS = {
    400: "The server could not comply with the request since it is either malformed "
    "or otherwise incorrect.",
    401: "This server could not verify that you are authorized to access the document "
    "you requested.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    409: "There was a conflict when trying to complete your request.",
    411: "Content-Length header required.",
    412: "A precondition for this request was not met.",
    413: "The body of your request was too large for this server.",
    416: "The Range requested is not available.",
    422: "Unable to process the contained instructions",
    499: "The client was disconnected during request.",
    500: "The server has either erred or is incapable of performing the requested operation.",
    501: "The requested method is not implemented by this server.",
    503: "The server is currently unavailable. Please try again at a later time.",
    504: "A timeout has occurred speaking to a backend server.",
    507: "There was not enough space to save the resource.",
}
TITLES = {416: "Requested Range Not Satisfiable", 499: "Client Disconnect", 500: "Internal Error"}


class SwiftError(APIError):
    """An error answered the way Swift answers it; ``body`` replaces the standard page."""

    def __init__(
        self,
        status: int,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "text/html; charset=UTF-8",
    ):
        super().__init__(body, status=status)
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


def title(status: int) -> str:
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def standard_page(status: int) -> str:
    explanation = EXPLANATIONS.get(status, "")
    if not explanation:
        return ""
    return f"<html><h1>{title(status)}</h1><p>{explanation}</p></html>"


def swift_error(err: APIError) -> Response:
    """Render any API error as Swift does (the formatter of the object service)."""
    if isinstance(err, SwiftError):
        body = err.body if err.body is not None else standard_page(err.status)
        return Response(body, err.status, headers=err.headers, media_type=err.content_type)
    body = standard_page(err.status) or err.message
    return Response(body, err.status, media_type="text/html; charset=UTF-8")
