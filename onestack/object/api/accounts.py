"""``/v1/{account}``: account HEAD/GET (listing), POST (metadata, quotas), bulk delete."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.routing import RouteTable
from onestack.object import timestamps
from onestack.object.api import bulk, listings
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
PATH = "/v1/{account}"
SHOWN = ("x-account-", "x-timestamp", "x-put-timestamp")
POLICY_USAGE = "x-account-storage-policy-policy-0-"


def _headers(backend: dict[str, str]) -> dict[str, str]:
    headers = forward_headers(backend, SHOWN)
    headers.pop("x-account-sysmeta-", None)
    headers = {k: v for k, v in headers.items() if not k.startswith("x-account-sysmeta-")}
    if "x-put-timestamp" in backend:
        headers["last-modified"] = http_date(math.ceil(float(backend["x-put-timestamp"])))
    headers.pop("x-put-timestamp", None)
    headers["accept-ranges"] = "bytes"
    return _with_policy_usage(headers)


def _with_policy_usage(headers: dict[str, str]) -> dict[str, str]:
    """Swift's per-policy usage of an account that has containers; with one policy
    (``Policy-0``) it is the account's totals."""
    if int(headers.get("x-account-container-count", "0")) > 0:
        for kind in ("container-count", "object-count", "bytes-used"):
            headers[f"{POLICY_USAGE}{kind}"] = headers.get(f"x-account-{kind}", "0")
    return headers


def _empty_account() -> dict[str, str]:
    """An account nothing was stored in yet, as Swift's autocreate shows it."""
    return {
        "x-account-container-count": "0",
        "x-account-object-count": "0",
        "x-account-bytes-used": "0",
        "x-timestamp": timestamps.now(),
    }


@routes.get(PATH)
async def get_account(request: Request) -> Response:
    swift = swift_request(request, "account")
    swift.authorize()
    media = listings.listing_format(request)
    if request.method == "HEAD":
        response = await swift.store.account_request("HEAD", swift.account)
        headers = _headers(response.headers) if response.ok else _empty_account()
        if response.status >= 500:
            raise SwiftError(503)
        headers = swift.visible(headers)
        return empty(204, {**headers, "content-type": f"{media}; charset=utf-8"})
    params = listings.listing_params(request)
    status, rows, backend = await _list(swift, params)
    if status >= 500:
        raise SwiftError(503)
    headers = swift.visible(_headers(backend) if status < 300 else _empty_account())
    return listings.render(media, "account", swift.account, rows, headers)


async def _list(
    swift: SwiftRequest, params: dict[str, str]
) -> tuple[int, list[dict[str, Any]], dict[str, str]]:
    response = await swift.store.account_request("GET", swift.account, params)
    if not response.ok:
        await response.close()
        return response.status, [], response.headers
    return response.status, json.loads(await response.read() or b"[]"), response.headers


@routes.post(PATH)
async def post_account(request: Request) -> Response:
    swift = swift_request(request, "account")
    if "bulk-delete" in request.query_params:
        return await bulk.bulk_delete(swift)
    grant = swift.authorize()
    if not grant.owner:
        raise SwiftError(403)
    changes = metadata_changes(swift.headers, "account", owner=True)
    quota_keys = [k for k in changes if k.startswith("x-account-meta-quota-")]
    if quota_keys and not grant.reseller:
        raise SwiftError(403)
    for key in quota_keys:
        if changes[key] and not changes[key].isdigit():
            raise SwiftError(400, f"Invalid value for {key}", content_type="text/plain")
    check_metadata(changes, "account")
    status = await swift.store.write_account("POST", swift.account, changes)
    if status == 404:
        status = await swift.store.write_account("PUT", swift.account, changes)
        status = 204 if status < 300 else status
    if status >= 300:
        raise SwiftError(status)
    return empty(204)


@routes.put(PATH)
async def put_account(request: Request) -> Response:
    swift_request(request, "account")
    raise SwiftError(405)


@routes.delete(PATH)
async def delete_account(request: Request) -> Response:
    swift_request(request, "account")
    raise SwiftError(405)
