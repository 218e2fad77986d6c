"""``/v2/schemas``: JSON schemas of images and members, as clients fetch them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable
from onestack.image.api.images import CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES

routes = RouteTable()

NULLABLE_STRING = {"type": ["null", "string"], "maxLength": 255}
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def image_schema() -> dict[str, Any]:
    """The schema of one image."""
    read_only = {"readOnly": True}
    return {
        "name": "image",
        "additionalProperties": {"type": "string"},
        "properties": {
            "id": {
                "type": "string",
                "pattern": UUID_PATTERN,
            },
            "name": {**NULLABLE_STRING, "description": "Descriptive name for the image"},
            "status": {
                "type": "string",
                "enum": [
                    "queued",
                    "saving",
                    "active",
                    "killed",
                    "deleted",
                    "uploading",
                    "importing",
                    "pending_delete",
                    "deactivated",
                ],
                **read_only,
            },
            "visibility": {"type": "string", "enum": list(VISIBILITIES)},
            "protected": {"type": "boolean"},
            "os_hidden": {"type": "boolean"},
            "checksum": {"type": ["null", "string"], "maxLength": 32, **read_only},
            "os_hash_algo": {"type": ["null", "string"], "maxLength": 64, **read_only},
            "os_hash_value": {"type": ["null", "string"], "maxLength": 128, **read_only},
            "owner": NULLABLE_STRING,
            "size": {"type": ["null", "integer"], **read_only},
            "virtual_size": {"type": ["null", "integer"], **read_only},
            "container_format": {"type": ["null", "string"], "enum": [None, *CONTAINER_FORMATS]},
            "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS]},
            "created_at": {"type": "string", **read_only},
            "updated_at": {"type": "string", **read_only},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
            "direct_url": {"type": "string", **read_only},
            "min_ram": {"type": "integer"},
            "min_disk": {"type": "integer"},
            "self": {"type": "string", **read_only},
            "file": {"type": "string", **read_only},
            "stores": {"type": "string", **read_only},
            "schema": {"type": "string", **read_only},
            "locations": {"type": "array", "items": {"type": "object"}},
        },
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def member_schema() -> dict[str, Any]:
    """The schema of one image member."""
    return {
        "name": "member",
        "properties": {
            "created_at": {"type": "string"},
            "image_id": {"type": "string"},
            "member_id": {"type": "string"},
            "schema": {"type": "string", "readOnly": True},
            "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
            "updated_at": {"type": "string"},
        },
    }


def collection(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            name: {"type": "array", "items": item},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


@routes.get("/v2/schemas/image")
async def image(request: Request) -> Response:
    return JSONResponse(image_schema())


@routes.get("/v2/schemas/images")
async def images(request: Request) -> Response:
    return JSONResponse(collection("images", image_schema()))


@routes.get("/v2/schemas/member")
async def member(request: Request) -> Response:
    return JSONResponse(member_schema())


@routes.get("/v2/schemas/members")
async def members(request: Request) -> Response:
    return JSONResponse(collection("members", member_schema()))
