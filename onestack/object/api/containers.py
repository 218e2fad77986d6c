"""``/v1/{account}/{container}``: container PUT, HEAD/GET (listings), POST, DELETE."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.routing import RouteTable
from onestack.object.api import listings
from onestack.object.api.access import validate_acl
from onestack.object.api.common import (
    SwiftRequest,
    check_metadata,
    empty,
    forward_headers,
    http_date,
    metadata_changes,
    swift_request,
)
from onestack.object.api.errors import SwiftError

routes = RouteTable()
PATHS = ("/v1/{account}/{container}", "/v1/{account}/{container}/")
SHOWN = (
    "x-container-",
    "x-timestamp",
    "x-versions-location",
    "x-history-location",
)
QUOTAS = ("x-container-meta-quota-bytes", "x-container-meta-quota-count")


def container_headers(swift: SwiftRequest, backend: dict[str, str]) -> dict[str, str]:
    headers = {
        k: v
        for k, v in forward_headers(backend, SHOWN).items()
        if not k.startswith("x-container-sysmeta-")
    }
    if "x-put-timestamp" in backend:
        headers["last-modified"] = http_date(math.ceil(float(backend["x-put-timestamp"])))
    headers["x-storage-policy"] = "Policy-0"
    headers["accept-ranges"] = "bytes"
    return swift.visible(headers)


def _validated_changes(swift: SwiftRequest) -> dict[str, str]:
    changes = metadata_changes(swift.headers, "container", owner=True)
    for name in ("x-container-read", "x-container-write"):
        if changes.get(name):
            changes[name] = validate_acl(changes[name])
    if changes.get("x-versions-location") and changes.get("x-history-location"):
        raise SwiftError(
            400,
            "Only one of X-Versions-Location or X-History-Location may be specified",
            content_type="text/plain",
        )
    for name in ("x-versions-location", "x-history-location"):
        if changes.get(name):
            location = changes[name].split("/")[0]
            if not location:
                raise SwiftError(
                    400, f"{name} header must be a valid container name", content_type="text/plain"
                )
            changes[name] = location
            other = "x-history-location" if name == "x-versions-location" else "x-versions-location"
            changes.setdefault(other, "")
    for name in QUOTAS:
        if changes.get(name) and not changes[name].isdigit():
            raise SwiftError(400, f"Invalid {name.title()}", content_type="text/plain")
    check_metadata(changes, "container")
    return changes


def _check_name(swift: SwiftRequest) -> None:
    if not swift.container or "/" in swift.container:
        raise SwiftError(400, "Invalid container name", content_type="text/plain")


@routes.put(PATHS[0])
async def put_container(request: Request) -> Response:
    swift = swift_request(request, "container")
    _check_name(swift)
    if not swift.authorize().owner:
        raise SwiftError(403)
    policy = swift.headers.get("x-storage-policy")
    if policy is not None and policy.lower() != "policy-0":
        raise SwiftError(400, f'Invalid X-Storage-Policy "{policy}"', content_type="text/plain")
    changes = _validated_changes(swift)
    status = await swift.store.write_container("PUT", swift.account, swift.container, changes)
    if status not in (201, 202):
        raise SwiftError(status if status >= 400 else 503)
    return empty(status)


@routes.get(PATHS[0])
async def get_container(request: Request) -> Response:
    swift = swift_request(request, "container")
    info = await swift.store.container_info(swift.account, swift.container)
    swift.authorize(info.read_acl if info else None)
    media = listings.listing_format(request)
    if request.method == "HEAD":
        response = await swift.store.container_request("HEAD", swift.account, swift.container)
        if not response.ok:
            raise SwiftError(response.status if response.status in (404,) else 503)
        headers = container_headers(swift, response.headers)
        return empty(204, {**headers, "content-type": f"{media}; charset=utf-8"})
    params = listings.listing_params(request)
    status, rows, backend = await swift.store.list_objects(swift.account, swift.container, **params)
    if status >= 300:
        raise SwiftError(404 if status == 404 else 503)
    return listings.render(
        media, "container", swift.container, rows, container_headers(swift, backend)
    )


@routes.post(PATHS[0])
async def post_container(request: Request) -> Response:
    swift = swift_request(request, "container")
    if not swift.authorize().owner:
        raise SwiftError(403)
    changes = _validated_changes(swift)
    status = await swift.store.write_container("POST", swift.account, swift.container, changes)
    if status >= 300:
        raise SwiftError(status)
    return empty(204)


@routes.delete(PATHS[0])
async def delete_container(request: Request) -> Response:
    swift = swift_request(request, "container")
    if not swift.authorize().owner:
        raise SwiftError(403)
    status = await swift.store.write_container("DELETE", swift.account, swift.container, {})
    if status == 409:
        raise SwiftError(409)
    if status >= 300:
        raise SwiftError(status)
    return empty(204)
