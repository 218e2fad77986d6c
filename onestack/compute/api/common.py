"""What every compute handler shares: the service, the caller, the microversion, policy,
tenancy and Nova's list conventions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from onestack.compute.service import ComputeService
from onestack.core.asgi.errors import BadRequest
from onestack.core.asgi.microversion import MicroversionPolicy, Version
from onestack.core.auth.context import RequestContext
from onestack.core.auth.middleware import request_context

MICROVERSIONS = MicroversionPolicy(
    "compute", Version(2, 1), Version(2, 96), legacy_header="X-OpenStack-Nova-API-Version"
)
TRUE_STRINGS = ("true", "1", "yes", "on", "t", "y")
FALSE_STRINGS = ("false", "0", "no", "off", "f", "n")


def service(request: Request) -> ComputeService:
    compute: ComputeService = request.app.state.compute
    return compute


def caller(request: Request) -> RequestContext:
    return request_context(request.scope.get("state", {}))


def version(request: Request) -> Version:
    """The microversion the request negotiated (2.1 when it asked for none)."""
    found = request.scope.get("state", {}).get("microversion")
    return found if isinstance(found, Version) else MICROVERSIONS.minimum


def at_least(request: Request, text: str) -> bool:
    """Whether the request's microversion is ``text`` or newer."""
    return version(request) >= Version.parse(text)


def enforce(request: Request, rule: str, target: dict[str, Any] | None = None) -> RequestContext:
    """Check ``compute:<rule>`` for the caller against ``target`` (a project-owned thing)."""
    context = caller(request)
    service(request).policy.enforce(f"compute:{rule}", context, target or {})
    return context


def is_admin(request: Request) -> bool:
    return service(request).policy.check("compute:admin", caller(request))


def own(request: Request) -> dict[str, Any]:
    """The policy target of the caller's own project."""
    return {"project_id": caller(request).project_id, "user_id": caller(request).user_id}


def as_bool(value: Any, name: str) -> bool:
    """A boolean from JSON or a query string; 400 otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_STRINGS:
        return True
    if text in FALSE_STRINGS:
        return False
    raise BadRequest(f"Invalid value {value!r} for '{name}': a boolean is expected.")


def as_int(value: Any, name: str, *, minimum: int | None = 0, maximum: int | None = None) -> int:
    """An integer (or an integer-looking string) within bounds; 400 otherwise."""
    if isinstance(value, bool):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value}.")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise BadRequest(
            f"Invalid input for field/attribute {name}. Value: {value}. "
            f"{value!r} is not an integer."
        ) from None
    if minimum is not None and number < minimum:
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value}. "
                         f"{value} is less than the minimum of {minimum}.")  # fmt: skip
    if maximum is not None and number > maximum:
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value}. "
                         f"{value} is greater than the maximum of {maximum}.")  # fmt: skip
    return number


def body_of(data: Any, key: str) -> dict[str, Any]:
    """The ``{key: {...}}`` envelope of a request body; 400 when missing."""
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise BadRequest(f"Invalid input: the request body must be an object with '{key}'.")
    inner: dict[str, Any] = data[key]
    return inner


def limit_marker(request: Request) -> tuple[int | None, str | None]:
    """``limit`` and ``marker`` of a list request."""
    params = request.query_params
    limit = as_int(params["limit"], "limit") if "limit" in params else None
    return limit, params.get("marker")
