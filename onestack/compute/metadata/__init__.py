"""The metadata service guests reach at 169.254.169.254 through the network's proxy.

The proxy forwards with ``X-Instance-ID`` (the server uuid), ``X-Tenant-ID`` and
``X-Instance-ID-Signature`` = hex HMAC-SHA256(metadata secret, instance id); a
request without a valid signature is refused. Content comes from
``metadata.content``, the same builder the config drive uses.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from onestack.compute.metadata import content

InstanceLookup = Callable[[str], Awaitable[dict[str, Any] | None]]
"""Returns the instance dict (see ``metadata.content``) of a server uuid, or None."""


def signature(secret: str, instance_id: str) -> str:
    """The ``X-Instance-ID-Signature`` the proxy sends for ``instance_id``."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def _text(body: str | bytes, status: int = 200) -> Response:
    return PlainTextResponse(body, status_code=status)


def _listing(names: list[str]) -> Response:
    return _text("\n".join(names))


def _openstack(instance: dict[str, Any], parts: list[str]) -> Response:
    if not parts:
        return _listing(list(content.OPENSTACK_VERSIONS))
    version, rest = parts[0], parts[1:]
    if version not in content.OPENSTACK_VERSIONS:
        return _text("Not Found", 404)
    files = content.openstack_files(instance)
    if not rest:
        return _listing(sorted(files))
    data = files.get("/".join(rest))
    if data is None:
        return _text("Not Found", 404)
    if rest[-1].endswith(".json"):
        return Response(data, media_type="application/json")
    return Response(data, media_type="text/plain")


def _ec2(instance: dict[str, Any], parts: list[str]) -> Response:
    version, rest = parts[0], parts[1:]
    if version not in content.EC2_VERSIONS:
        return _text("Not Found", 404)
    if not rest:
        listing = ["meta-data/"]
        if content.user_data(instance) is not None:
            listing.append("user-data")
        return _listing(listing)
    if rest == ["user-data"]:
        data = content.user_data(instance)
        return _text("Not Found", 404) if data is None else Response(data)
    if rest[0] != "meta-data":
        return _text("Not Found", 404)
    node: Any = content.ec2_metadata(instance)
    for part in rest[1:]:
        if not isinstance(node, dict):
            return _text("Not Found", 404)
        if part in node:
            node = node[part]
            continue
        # public-keys/0 is the "0=name" entry.
        match = [key for key in node if key.split("=", 1)[0] == part]
        if not match:
            return _text("Not Found", 404)
        node = node[match[0]]
    if isinstance(node, dict):
        if rest[1:2] == ["public-keys"] and len(rest) == 2:
            return _listing(list(node))
        names = [
            (key.split("=", 1)[0] if "=" in key else key) + ("/" if isinstance(v, dict) else "")
            for key, v in node.items()
        ]
        return _listing(names)
    return _text(str(node))


def metadata_app(lookup: InstanceLookup, secret: str | Callable[[], str]) -> Starlette:
    """The metadata ASGI app (mounted by compute at ``/metadata``)."""

    def current_secret() -> str:
        return secret() if callable(secret) else secret

    async def serve(request: Request) -> Response:
        instance_id = request.headers.get("x-instance-id", "")
        given = request.headers.get("x-instance-id-signature", "")
        if not instance_id or not hmac.compare_digest(
            given.lower(), signature(current_secret(), instance_id)
        ):
            return _text("Invalid proxy request signature.", 403)
        instance = await lookup(instance_id)
        tenant = request.headers.get("x-tenant-id")
        if instance is None or (tenant and tenant != instance.get("project_id")):
            return _text("Instance not found.", 404)
        parts = [part for part in request.path_params.get("path", "").split("/") if part]
        if not parts:
            return _listing(list(content.EC2_VERSIONS))
        if parts[0] == "openstack":
            return _openstack(instance, parts[1:])
        return _ec2(instance, parts)

    return Starlette(
        routes=[
            Route("/", serve, methods=["GET", "HEAD"]),
            Route("/{path:path}", serve, methods=["GET", "HEAD"]),
        ]
    )


def shared_secret(settings: Any) -> Callable[[], str]:
    """The secret shared with the network's metadata proxy: setting ``metadata_secret``, else
    ``<data dir>/metadata-secret`` (created by whichever side starts first); read when needed."""
    cache: list[str] = []

    def read() -> str:
        if not cache:
            given = str(getattr(settings, "metadata_secret", "") or "")
            if given:
                cache.append(given)
            else:
                from onestack.cloud import read_or_create_secret

                cache.append(read_or_create_secret(settings.data_dir / "metadata-secret"))
        return cache[0]

    return read
