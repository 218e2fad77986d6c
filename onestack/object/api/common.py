"""What every Swift handler starts with: the parsed request, the caller, and their grant."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from onestack.core.auth.context import TokenData
from onestack.core.auth.middleware import request_context
from onestack.object.api.access import Grant, authorize, strip_owner_headers
from onestack.object.api.errors import SwiftError

if TYPE_CHECKING:
    from onestack.object.proxy.store import Store
    from onestack.object.service import ObjectService

MAX_CONTAINER_NAME = 256
MAX_OBJECT_NAME = 1024
MAX_ACCOUNT_NAME = 256
MAX_META_NAME = 128
MAX_META_VALUE = 256
MAX_META_COUNT = 90
MAX_META_OVERALL = 4096
LISTING_LIMIT = 10000


def trans_id() -> str:
    """Swift's transaction id: ``tx`` + 21 hex digits + ``-`` + the time in hex."""
    return f"tx{uuid.uuid4().hex[:21]}-{int(time.time()):010x}"


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


@dataclass
class SwiftRequest:
    """One API request after path parsing: names, headers, caller, and what they may do."""

    request: Request
    service: ObjectService
    account: str
    container: str = ""
    obj: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    token: TokenData | None = None
    grant: Grant = field(default_factory=Grant)
    temp_url: bool = False

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def query(self) -> Any:
        return self.request.query_params

    @property
    def store(self) -> Store:
        return self.service.store

    def authorize(self, acl: str | None = None, *, method: str | None = None) -> Grant:
        """Check the caller against the account (and ``acl``); remember the grant."""
        if self.temp_url:
            return self.grant
        self.grant = authorize(
            self.token,
            self.service.roles,
            self.account,
            method=method or self.method,
            container=self.container,
            obj=self.obj,
            acl=acl,
            referer=self.headers.get("referer"),
        )
        return self.grant

    def visible(self, headers: dict[str, str]) -> dict[str, str]:
        return headers if self.grant.owner else strip_owner_headers(headers)


def swift_request(request: Request, level: str) -> SwiftRequest:
    """Parse ``/v1/{account}[/{container}[/{object}]]`` and check the names."""
    params = request.path_params
    account = params["account"]
    container = params.get("container", "")
    obj = params.get("obj", "")
    if level == "object" and not obj:
        level = "container"
    if len(account.encode()) > MAX_ACCOUNT_NAME:
        raise SwiftError(400, "Account name length too long")
    if container and len(container.encode()) > MAX_CONTAINER_NAME:
        raise SwiftError(
            400,
            f"Container name length of {len(container.encode())} longer than {MAX_CONTAINER_NAME}",
        )
    if obj and len(obj.encode()) > MAX_OBJECT_NAME:
        raise SwiftError(
            400, f"Object name length of {len(obj.encode())} longer than {MAX_OBJECT_NAME}"
        )
    if "\x00" in account + container + obj:
        raise SwiftError(412, "Invalid UTF8 or contains NULL")
    context = request_context(request.scope.get("state", {}))
    service: ObjectService = request.app.state.object_service
    headers = {k.lower(): v for k, v in request.headers.items()}
    swift = SwiftRequest(request, service, account, container, obj, headers, context.token)
    tempurl = request.scope.get("state", {}).get("temp_url")
    if tempurl is not None:
        swift.temp_url = True
        swift.grant = Grant(owner=False, via_acl=True)
    return swift


def check_metadata(headers: dict[str, str], target: str) -> None:
    """Swift's metadata limits: name and value lengths, count, overall size (400 when over)."""
    prefix = f"x-{target}-meta-"
    count = size = 0
    for key, value in headers.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if not name:
            raise SwiftError(400, "Metadata name cannot be empty", content_type="text/plain")
        if len(name) > MAX_META_NAME:
            raise SwiftError(400, f"Metadata name too long: {key}", content_type="text/plain")
        if len(value) > MAX_META_VALUE:
            raise SwiftError(
                400,
                f"Metadata value longer than {MAX_META_VALUE}: {key}",
                content_type="text/plain",
            )
        count += 1
        size += len(name) + len(value)
    if count > MAX_META_COUNT:
        raise SwiftError(
            400, f"Too many metadata items; max {MAX_META_COUNT}", content_type="text/plain"
        )
    if size > MAX_META_OVERALL:
        raise SwiftError(
            400, f"Total metadata too large; max {MAX_META_OVERALL}", content_type="text/plain"
        )


def metadata_changes(headers: dict[str, str], target: str, *, owner: bool) -> dict[str, str]:
    """Headers to store from a PUT/POST: metadata, ``X-Remove-*`` as empty values, owner-only
    settings only for the owner. System metadata never comes from clients."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        if key.startswith(f"x-remove-{target}-meta-"):
            out[f"x-{target}-meta-" + key[len(f"x-remove-{target}-meta-") :]] = ""
        elif key.startswith(f"x-{target}-meta-"):
            out[key] = value
    if target == "container":
        for name in ("read", "write"):
            if f"x-container-{name}" in headers:
                out[f"x-container-{name}"] = headers[f"x-container-{name}"]
            if f"x-remove-container-{name}" in headers:
                out[f"x-container-{name}"] = ""
        for name in ("x-versions-location", "x-history-location"):
            if name in headers:
                out[name] = headers[name]
            if f"x-remove-{name[2:]}" in headers:
                out[name] = ""
    if not owner:
        out = {
            k: v
            for k, v in out.items()
            if not k.startswith(("x-container-read", "x-container-write"))
            and "temp-url-key" not in k
        }
    return out


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    """A bodiless Swift answer (``Content-Type: text/html; charset=UTF-8``, length 0)."""
    out = {"content-length": "0", "content-type": "text/html; charset=UTF-8", **(headers or {})}
    if status == 204:
        out.pop("content-length")
    return Response(b"", status, headers=out)


def forward_headers(backend: dict[str, str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """Backend response headers a client may see."""
    return {k: v for k, v in backend.items() if k.startswith(prefixes)}
