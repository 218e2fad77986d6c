"""What every placement handler shares: the service, policy, microversions, bodies, responses,
and placement's error codes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from email.utils import format_datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import (
    APIError,
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from onestack.core.asgi.microversion import Version, request_version
from onestack.core.asgi.request import describe_validation_error
from onestack.core.asgi.routing import service_root
from onestack.core.auth.context import RequestContext
from onestack.core.auth.middleware import request_context
from onestack.core.db import affected, utcnow
from onestack.placement.models import ResourceProvider
from onestack.placement.service import PlacementService

ModelT = TypeVar("ModelT", bound=BaseModel)

# Placement's error codes (api-ref "Errors").
CONCURRENT_UPDATE = "placement.concurrent_update"
DUPLICATE_NAME = "placement.duplicate_name"
INVENTORY_INUSE = "placement.inventory.inuse"
PROVIDER_INUSE = "placement.resource_provider.inuse"
PROVIDER_CANNOT_DELETE_PARENT = "placement.resource_provider.cannot_delete_parent"
PROVIDER_NOT_FOUND = "placement.resource_provider.not_found"
QUERY_DUPLICATE_KEY = "placement.query.duplicate_key"
QUERY_BAD_VALUE = "placement.query.bad_value"
QUERY_MISSING_VALUE = "placement.query.missing_value"


def service(request: Request) -> PlacementService:
    placement: PlacementService = request.app.state.placement
    return placement


def enforce(request: Request, rule: str, target: dict[str, Any] | None = None) -> RequestContext:
    """Check ``placement:<rule>`` for the caller; 401/403 otherwise."""
    context = request_context(request.scope.get("state", {}))
    service(request).policy.enforce(f"placement:{rule}", context, target or {})
    return context


def version(request: Request) -> Version:
    return request_version(request)


def at_least(request: Request, minor: int) -> bool:
    """Whether the request's microversion is ``1.<minor>`` or later."""
    return version(request) >= Version(1, minor)


def require_version(request: Request, minor: int, *, status: int = 404) -> None:
    """Routes added in ``1.<minor>`` do not exist for older versions (404, or 405 for a method
    added to an existing route)."""
    if not at_least(request, minor):
        if status == 405:
            raise MethodNotAllowed(f"The method {request.method} is not allowed for this resource.")
        raise NotFound("The resource could not be found.")


def canonical_uuid(value: str) -> str:
    """A UUID in its dashed lowercase form; ValueError for anything else."""
    return str(uuid.UUID(value))


UUIDStr = Annotated[str, AfterValidator(canonical_uuid)]


class Body(BaseModel):
    """Request bodies reject unknown fields, as placement's JSON schemas do."""

    model_config = ConfigDict(extra="forbid", strict=True)


async def body_as(request: Request, model: type[ModelT]) -> ModelT:
    """The JSON body validated against ``model`` (415 for another media type, 400 if invalid)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if not content_type:
        if raw:
            raise BadRequest("content-type header required when body is present")
        raise UnsupportedMediaType("The media type None is not supported, use application/json")
    if content_type != "application/json":
        raise UnsupportedMediaType(
            f"The media type {content_type} is not supported, use application/json"
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"JSON does not validate: {describe_validation_error(exc)}") from None


def json_response(
    request: Request,
    data: Any,
    status: int = 200,
    *,
    last_modified: dt.datetime | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON response; from 1.15 with ``last-modified`` and ``cache-control: no-cache``."""
    all_headers = dict(headers or {})
    if at_least(request, 15):
        all_headers["cache-control"] = "no-cache"
        all_headers["last-modified"] = format_datetime(last_modified or utcnow(), usegmt=True)
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=all_headers
    )


def no_content(headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=204, headers=headers)


def conflict(message: str, code: str = CONCURRENT_UPDATE) -> APIError:
    return Conflict(message, code=code)


def bad_query(message: str, code: str | None = None) -> APIError:
    return BadRequest(message, code=code) if code else BadRequest(message)


def mount_path(request: Request) -> str:
    """Where placement is mounted (``/placement`` in the all-in-one process), for links."""
    root: str = request.scope.get("root_path", "")
    return root


def location(request: Request, path: str) -> dict[str, str]:
    """A ``Location`` header: absolute, as clients (osc-placement) follow it as given."""
    return {"location": f"{service_root(request)}{path}"}


async def find_provider(session: AsyncSession, provider_uuid: str) -> ResourceProvider:
    """The provider with that uuid; 404 when there is none."""
    try:
        key = canonical_uuid(provider_uuid)
    except ValueError:
        key = provider_uuid
    row = await session.scalar(select(ResourceProvider).where(ResourceProvider.uuid == key))
    if row is None:
        raise NotFound(f"No resource provider with uuid {provider_uuid} found")
    return row


GENERATION_CHANGED = (
    "Resource provider's generation already changed. Please update the generation and try again."
)


async def bump_generation(
    session: AsyncSession,
    provider_id: int,
    expected: int | None,
    message: str = "resource provider generation conflict",
) -> int:
    """Increment a provider's generation (only from ``expected``, when given): every change
    to a provider does, so concurrent writers notice. 409 with ``message`` if it had moved;
    returns the new generation."""
    statement = update(ResourceProvider).where(ResourceProvider.id == provider_id)
    if expected is not None:
        statement = statement.where(ResourceProvider.generation == expected)
    done = await session.execute(
        statement.values(
            generation=ResourceProvider.generation + 1, updated_at=utcnow()
        ).execution_options(synchronize_session=False)
    )
    if affected(done) != 1:
        raise conflict(message, code=CONCURRENT_UPDATE)
    generation = await session.scalar(
        select(ResourceProvider.generation).where(ResourceProvider.id == provider_id)
    )
    return int(generation or 0)


async def path_provider(request: Request) -> ResourceProvider:
    """The provider named by the path's ``{uuid}``; 404 when there is none."""
    async with service(request).db.session() as session:
        return await find_provider(session, request.path_params["uuid"])


def check_query(request: Request, allowed: set[str]) -> None:
    """400 for query parameters the handler (at this microversion) does not know."""
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        raise BadRequest(
            "Invalid query string parameters: Additional properties are not allowed "
            f"({', '.join(repr(name) for name in unknown)} were unexpected)"
        )
