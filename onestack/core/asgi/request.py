"""Reading request bodies and query strings the same way in every API."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from onestack.core.asgi.errors import BadRequest

ModelT = TypeVar("ModelT", bound=BaseModel)


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; 400 when it is not JSON."""
    raw = await request.body()
    if not raw:
        raise BadRequest("The request body is empty; a JSON document was expected.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Malformed JSON in request body: {exc}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence for the first problem pydantic found."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"Invalid input for field '{where}': {first['msg']}."


def parse(model: type[ModelT], data: Any) -> ModelT:
    """Validate ``data`` against ``model``; 400 with the first problem when it fails."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc)) from None


async def body_as(request: Request, model: type[ModelT]) -> ModelT:
    """Parse and validate the JSON body of ``request``."""
    return parse(model, await json_body(request))


def query_bool(request: Request, name: str) -> bool | None:
    """A boolean query parameter as OpenStack accepts it (true/false/1/0/yes/no)."""
    value = request.query_params.get(name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("", "true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"Invalid boolean value {value!r} for query parameter {name!r}.")
