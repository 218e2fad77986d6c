"""TempURL: HMAC-signed, expiring URLs that grant one method on one object (or prefix).

``?temp_url_sig=<sig>&temp_url_expires=<epoch or ISO 8601>[&temp_url_prefix=p]
[&filename=f][&inline]``; the signature is HMAC(key, ``METHOD\\nEXPIRES\\nPATH``)
with SHA-1, SHA-256 or SHA-512 (hex, or ``<digest>:<base64>``), keyed by the
account's or the container's ``Temp-URL-Key`` / ``Temp-URL-Key-2``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote

from onestack.object.api.errors import SwiftError
from onestack.object.proxy.store import Store

METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
HEX_LENGTHS = {40: "sha1", 64: "sha256", 128: "sha512"}


@dataclass
class TempURL:
    """A verified temporary URL: what it allows and how its GET answers are named."""

    expires: int
    filename: str | None
    inline: bool
    method: str

    def response_headers(self, obj: str) -> dict[str, str]:
        if self.method not in ("GET", "HEAD"):
            return {}
        name = self.filename or obj.rsplit("/", 1)[-1]
        quoted = quote(name, safe="")
        if self.inline:
            if self.filename:
                return {
                    "content-disposition": f"inline; filename=\"{name}\"; filename*=UTF-8''{quoted}"
                }
            return {"content-disposition": "inline"}
        return {
            "content-disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quoted}"
        }


def parse_expires(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain") from None


def _signature(sig: str) -> tuple[str, bytes]:
    if ":" in sig:
        name, _, encoded = sig.partition(":")
        if name not in DIGESTS:
            raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain")
        try:
            return name, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain") from None
    name = HEX_LENGTHS.get(len(sig), "")
    if not name:
        raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain")
    try:
        return name, bytes.fromhex(sig)
    except ValueError:
        raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain") from None


async def verify(
    store: Store,
    method: str,
    path: str,
    account: str,
    container: str,
    obj: str,
    query: dict[str, str],
) -> TempURL:
    """Check a temp URL request; 401 ``Temp URL invalid`` / ``Temp URL expired`` otherwise."""
    if not container or not obj:
        raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain")
    expires = parse_expires(query.get("temp_url_expires", ""))
    if expires < time.time():
        raise SwiftError(401, "Temp URL expired\n", content_type="text/plain")
    if method not in METHODS:
        raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain")
    digest_name, given = _signature(query.get("temp_url_sig", ""))
    prefix = query.get("temp_url_prefix")
    if prefix is not None:
        if not obj.startswith(prefix):
            raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain")
        signed_path = f"prefix:/v1/{account}/{container}/{prefix}"
    else:
        signed_path = path
    keys = await _keys(store, account, container)
    methods = ("GET", "PUT", "POST") if method == "HEAD" else (method,)
    digest = DIGESTS[digest_name]
    for key in keys:
        for signed_method in (*methods, method):
            message = f"{signed_method}\n{query.get('temp_url_expires')}\n{signed_path}"
            expected = hmac.new(key.encode(), message.encode(), digest).digest()
            if hmac.compare_digest(expected, given):
                return TempURL(expires, query.get("filename"), "inline" in query, method)
    raise SwiftError(401, "Temp URL invalid\n", content_type="text/plain")


async def _keys(store: Store, account: str, container: str) -> list[str]:
    keys = []
    account_info = await store.account_info(account)
    if account_info is not None:
        keys += [account_info.meta(n) for n in ("temp-url-key", "temp-url-key-2")]
    container_info = await store.container_info(account, container)
    if container_info is not None:
        keys += [container_info.meta(n) for n in ("temp-url-key", "temp-url-key-2")]
    return [k for k in keys if k]
