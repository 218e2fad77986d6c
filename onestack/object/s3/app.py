"""The S3 view as an ASGI app: authentication, then dispatch by method, path and query."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from onestack.core.asgi.app import service_app
from onestack.core.client import ServiceClient
from onestack.object.app import TransIdMiddleware
from onestack.object.s3 import buckets, multipart, objects
from onestack.object.s3.auth import S3Authenticator
from onestack.object.s3.errors import S3Error, s3_error
from onestack.object.s3.request import S3Request, bucket_and_key
from onestack.object.service import ObjectService

Handler = Callable[[S3Request], Awaitable[Response]]
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]


def _route(s3: S3Request) -> Handler:
    """Which S3 operation a request is (method, bucket/key, sub-resource query)."""
    method, query = s3.request.method, s3.query
    if not s3.bucket:
        if method in ("GET", "HEAD"):
            return buckets.list_buckets
        raise S3Error("MethodNotAllowed")
    if not s3.key:
        table: dict[str, Handler] = {
            "PUT": buckets.create_bucket,
            "DELETE": buckets.delete_bucket,
            "HEAD": buckets.head_bucket,
        }
        if method in table:
            return table[method]
        if method == "GET":
            if "location" in query:
                return buckets.bucket_location
            if "uploads" in query:
                return multipart.list_uploads
            return buckets.list_objects
        if method == "POST" and "delete" in query:
            return buckets.delete_objects
        raise S3Error("MethodNotAllowed")
    if "uploadId" in query:
        upload: dict[str, Handler] = {
            "PUT": multipart.upload_part,
            "POST": multipart.complete_upload,
            "DELETE": multipart.abort_upload,
            "GET": multipart.list_parts,
        }
        if method in upload:
            return upload[method]
        raise S3Error("MethodNotAllowed")
    if method == "POST" and "uploads" in query:
        return multipart.create_upload
    table = {
        "PUT": objects.put_object,
        "GET": objects.get_object,
        "HEAD": objects.get_object,
        "DELETE": objects.delete_object,
    }
    if method in table:
        return table[method]
    raise S3Error("MethodNotAllowed")


def build_s3_app(service: ObjectService, client: ServiceClient) -> tuple[ASGIApp, S3Authenticator]:
    """The S3 API over ``service``'s store; signatures checked through identity with ``client``."""
    authenticator = S3Authenticator(client, service.settings.s3_domains)

    async def dispatch(request: Request) -> Response:
        signed = await authenticator.verify(request)
        bucket, key = bucket_and_key(request, service.settings.s3_domains)
        headers = {k.lower(): v for k, v in request.headers.items()}
        s3 = S3Request(request, service, signed, bucket, key, headers)
        handler = _route(s3)
        return await handler(s3)

    def render(err: Exception) -> Response:
        return s3_error(err)  # type: ignore[arg-type]

    app = service_app("s3", [Route("/{path:path}", dispatch, methods=METHODS)], render)
    return TransIdMiddleware(app, (b"x-amz-request-id", b"x-amz-id-2")), authenticator


__all__ = ["S3Error", "build_s3_app"]
