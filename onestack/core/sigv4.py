"""AWS Signature Version 4: canonical requests, strings to sign, signing keys.

Shared by identity (``/v3/ec2tokens``, ``/v3/s3tokens``) and the object
store's S3 view. Written here rather than borrowed from botocore: botocore
signs outgoing requests of its own request class, while a server must rebuild
the canonical request from what arrived (the raw path, the query as sent, the
headers the client listed), which is a few lines of hashing over the spec.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """RFC 3986 encoding as SigV4 wants it: unreserved characters kept, the rest %XX."""
    return quote(value, safe="-_.~/" if keep_slash else "-_.~")


def canonical_uri(raw_path: str) -> str:
    """The path as S3 canonicalises it: each segment encoded exactly once."""
    return uri_encode(unquote(raw_path), keep_slash=True) or "/"


def canonical_query(pairs: Iterable[tuple[str, str]], *, skip: str | None = None) -> str:
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs if k != skip)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_headers(headers: dict[str, str], signed: list[str]) -> str:
    lines = []
    for name in signed:
        value = " ".join(headers.get(name, "").split())
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    raw_path: str,
    query: Iterable[tuple[str, str]],
    headers: dict[str, str],
    signed_headers: list[str],
    payload_hash: str,
    *,
    skip_query: str | None = None,
) -> str:
    """The canonical request of the spec, from the request as the server received it."""
    return "\n".join(
        [
            method,
            canonical_uri(raw_path),
            canonical_query(query, skip=skip_query),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def signature_from_string(secret: str, text: str) -> str:
    """Sign a complete string to sign: its scope (line 3) names the key to derive."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[0] != ALGORITHM:
        raise ValueError("not a SigV4 string to sign")
    scope = lines[2].split("/")
    if len(scope) != 4 or scope[3] != "aws4_request" or scope[2] not in ("s3", "iam", "sts", "ec2"):
        raise ValueError("bad credential scope")
    return sign(signing_key(secret, scope[0], scope[1], scope[2]), text)


def chunk_string_to_sign(amz_date: str, scope: str, previous: str, chunk_hash: str) -> str:
    """What each chunk of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` upload is signed over."""
    return "\n".join(
        ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256, chunk_hash]
    )


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
