"""Who signed an S3 request: AWS Signature V4 checked against identity's EC2 credentials.

As Swift's s3api with s3token: the S3 view builds the string to sign from the
request and asks identity (``POST /v3/s3tokens``, with the service token) who
the access key belongs to and whether the signature is right. It then keeps
the credential's secret for a minute (read through identity's OS-EC2 API, as
s3token's secret cache does) so that later requests, and the chunk signatures
of streamed uploads, are checked here; identity's change events empty the cache.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import Scope

from onestack.core import sigv4
from onestack.core.auth.context import TokenData
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.identity_events import on_identity_change
from onestack.object.s3.errors import S3Error

CACHE_SECONDS = 60.0
MAX_SKEW = 15 * 60
MAX_PRESIGN = 7 * 86400
STREAMING_SIGNED = (
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
)
STREAMING_UNSIGNED = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


@dataclass
class Signed:
    """A verified request: who, and what the body must be checked against."""

    token: TokenData
    access: str
    payload_hash: str
    amz_date: str
    scope: str
    seed_signature: str
    key: bytes


@dataclass
class _Parts:
    access: str
    scope: str
    signed_headers: list[str]
    signature: str
    amz_date: str
    payload_hash: str
    presigned: bool


def is_s3_request(headers: dict[str, str], query_string: str) -> bool:
    """Whether a request carries AWS authentication (header or presigned query)."""
    if headers.get("authorization", "").startswith(("AWS4-HMAC-SHA256", "AWS ")):
        return True
    return "X-Amz-Signature=" in query_string or "AWSAccessKeyId=" in query_string


# Sub-resources that are part of a V2 signature's canonical resource.
V2_SUBRESOURCES = (
    "acl",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
)


def _v2_string(
    method: str, raw_path: str, query: list[tuple[str, str]], headers: dict[str, str], date: str
) -> str:
    """Signature V2's string to sign (header form, or ``Expires`` for query-signed URLs)."""
    amz = sorted((k, " ".join(v.split())) for k, v in headers.items() if k.startswith("x-amz-"))
    resource = raw_path
    subs = sorted((k, v) for k, v in query if k in V2_SUBRESOURCES)
    if subs:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subs)
    lines = [method, headers.get("content-md5", ""), headers.get("content-type", ""), date]
    lines += [f"{k}:{v}" for k, v in amz]
    return "\n".join([*lines, resource])


def _parts(request: Request, headers: dict[str, str], query: list[tuple[str, str]]) -> _Parts:
    authorization = headers.get("authorization", "")
    if authorization.startswith(sigv4.ALGORITHM):
        fields = {}
        for item in authorization[len(sigv4.ALGORITHM) :].split(","):
            key, _, value = item.strip().partition("=")
            fields[key] = value
        credential = fields.get("Credential", "")
        amz_date = headers.get("x-amz-date", "")
        payload = headers.get("x-amz-content-sha256", "")
        if not payload:
            raise S3Error(
                "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
            )
        signature = fields.get("Signature", "")
        signed = fields.get("SignedHeaders", "")
        presigned = False
    else:
        params = dict(query)
        if params.get("X-Amz-Algorithm") != sigv4.ALGORITHM:
            raise S3Error("AccessDenied", "Anonymous access is not allowed.")
        credential = params.get("X-Amz-Credential", "")
        amz_date = params.get("X-Amz-Date", "")
        signature = params.get("X-Amz-Signature", "")
        signed = params.get("X-Amz-SignedHeaders", "")
        payload = "UNSIGNED-PAYLOAD"
        presigned = True
        try:
            expires = int(params.get("X-Amz-Expires", "0"))
            issued = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise S3Error(
                "AuthorizationQueryParametersError", "Invalid X-Amz-Date or X-Amz-Expires."
            ) from None
        if not 0 < expires <= MAX_PRESIGN:
            raise S3Error(
                "AuthorizationQueryParametersError",
                "X-Amz-Expires must be between 1 and 604800 seconds.",
            )
        if time.time() > issued.timestamp() + expires:
            raise S3Error("AccessDenied", "Request has expired")
    access, _, scope = credential.partition("/")
    if not access or scope.count("/") != 3 or not signature:
        raise S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed.")
    if not presigned:
        try:
            issued = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise S3Error(
                "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
            ) from None
        if abs(time.time() - issued.timestamp()) > MAX_SKEW:
            raise S3Error("RequestTimeTooSkewed")
    return _Parts(access, scope, signed.split(";"), signature, amz_date, payload, presigned)


class S3Authenticator:
    """Checks SigV4 signatures with credentials identity vouches for."""

    def __init__(self, client: ServiceClient, domains: list[str]):
        self.client = client
        self.domains = domains
        self._cache: dict[str, tuple[float, str, TokenData]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def listen(self, bus: Bus) -> Consumer:
        return await on_identity_change(bus, self.forget)

    async def verify(self, request: Request) -> Signed:
        headers = {k.lower(): v for k, v in request.headers.items()}
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        query = parse_qsl(raw_query, keep_blank_values=True)
        scope = request.scope
        raw = scope.get("sent_raw_path") or scope.get("raw_path") or scope["path"].encode()
        raw_path = raw.decode("latin-1")
        if headers.get("authorization", "").startswith("AWS ") or "AWSAccessKeyId" in dict(query):
            return await self._verify_v2(
                request.method, self._v2_resource(scope, raw_path, headers), query, headers
            )
        parts = _parts(request, headers, query)
        canonical = sigv4.canonical_request(
            request.method,
            raw_path.split("?", 1)[0],
            query,
            headers,
            parts.signed_headers,
            parts.payload_hash,
            skip_query="X-Amz-Signature" if parts.presigned else None,
        )
        text = sigv4.string_to_sign(parts.amz_date, parts.scope, canonical)
        secret, token = await self._credential(parts.access, text, parts.signature)
        date, region, service, _ = parts.scope.split("/")
        key = sigv4.signing_key(secret, date, region, service)
        if not sigv4.same(sigv4.sign(key, text), parts.signature):
            raise S3Error("SignatureDoesNotMatch")
        return Signed(
            token,
            parts.access,
            parts.payload_hash,
            parts.amz_date,
            parts.scope,
            parts.signature,
            key,
        )

    def _v2_resource(self, scope: Scope, raw_path: str, headers: dict[str, str]) -> str:
        """V2 signs ``/bucket/key`` whatever path prefix the endpoint has."""
        path = raw_path.split("?", 1)[0]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        host = headers.get("host", "").split(":")[0].lower()
        for domain in self.domains:
            if host.endswith("." + domain):
                return "/" + host[: -len(domain) - 1] + path
        return path

    async def _verify_v2(
        self, method: str, raw_path: str, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> Signed:
        """Signature V2 (``AWS access:signature`` or ``AWSAccessKeyId``/``Signature`` URLs)."""
        params = dict(query)
        if "AWSAccessKeyId" in params:
            access, signature = params["AWSAccessKeyId"], params.get("Signature", "")
            try:
                expires = int(params.get("Expires", "0"))
            except ValueError:
                raise S3Error("AccessDenied", "Invalid Expires.") from None
            if time.time() > expires:
                raise S3Error("AccessDenied", "Request has expired")
            date = str(expires)
        else:
            access, _, signature = headers["authorization"][4:].strip().rpartition(":")
            date = "" if "x-amz-date" in headers else headers.get("date", "")
            moment = headers.get("x-amz-date") or headers.get("date", "")
            try:
                stamp = email.utils.parsedate_to_datetime(moment).timestamp()
            except (TypeError, ValueError):
                raise S3Error(
                    "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
                ) from None
            if abs(time.time() - stamp) > MAX_SKEW:
                raise S3Error("RequestTimeTooSkewed")
        text = _v2_string(method, raw_path, query, headers, date)
        secret, token = await self._credential(access, text, signature)
        expected = base64.b64encode(
            hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
        ).decode()
        if not sigv4.same(expected, signature):
            raise S3Error("SignatureDoesNotMatch")
        return Signed(token, access, "UNSIGNED-PAYLOAD", "", "", "", b"")

    async def _credential(self, access: str, text: str, signature: str) -> tuple[str, TokenData]:
        cached = self._cache.get(access)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        body = {
            "credentials": {
                "access": access,
                "token": base64.urlsafe_b64encode(text.encode()).decode(),
                "signature": signature,
            }
        }
        response = await self.client.request("identity", "POST", "/s3tokens", json=body)
        if response.status_code == 404:
            raise S3Error("InvalidAccessKeyId")
        if response.status_code == 401:
            raise S3Error("SignatureDoesNotMatch")
        if response.status_code != 200:
            raise S3Error("ServiceUnavailable", "Identity could not check the credential.")
        token = TokenData.from_keystone(response.json())
        found = await self.client.request(
            "identity", "GET", f"/users/{token.user_id}/credentials/OS-EC2/{access}"
        )
        if found.status_code != 200:
            raise S3Error("InvalidAccessKeyId")
        secret = str(found.json()["credential"]["secret"])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[access] = (time.monotonic() + CACHE_SECONDS, secret, token)
        return secret, token


def payload_reader(
    signed: Signed, headers: dict[str, str], body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """The object bytes of an upload, checked as its ``x-amz-content-sha256`` says."""
    mode = signed.payload_hash
    encoding = headers.get("content-encoding", "")
    if mode in STREAMING_SIGNED or mode == STREAMING_UNSIGNED or "aws-chunked" in encoding:
        return _aws_chunked(signed, body, signed_chunks=mode in STREAMING_SIGNED)
    if mode == "UNSIGNED-PAYLOAD":
        return body
    if len(mode) == 64:
        return _sha256_checked(body, mode)
    raise S3Error(
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a SHA-256 hex digest.",
    )


async def _sha256_checked(body: AsyncIterator[bytes], expected: str) -> AsyncIterator[bytes]:
    digest = hashlib.sha256()
    async for chunk in body:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != expected.lower():
        raise S3Error("XAmzContentSHA256Mismatch")


async def _aws_chunked(
    signed: Signed, body: AsyncIterator[bytes], *, signed_chunks: bool
) -> AsyncIterator[bytes]:
    """Decode ``aws-chunked``: ``<hex size>[;chunk-signature=…]\\r\\n<data>\\r\\n`` …, trailers."""
    buffer = bytearray()
    stream = body.__aiter__()
    previous = signed.seed_signature
    crc = 0
    trailer: dict[str, str] = {}

    async def fill(size: int) -> bool:
        while len(buffer) < size:
            try:
                buffer.extend(await stream.__anext__())
            except StopAsyncIteration:
                return False
        return True

    async def line() -> bytes:
        while b"\r\n" not in buffer:
            if not await fill(len(buffer) + 1):
                raise S3Error("IncompleteBody")
        end = buffer.index(b"\r\n")
        text = bytes(buffer[:end])
        del buffer[: end + 2]
        return text

    while True:
        header = (await line()).decode("latin-1")
        size_text, _, extension = header.partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise S3Error("IncompleteBody", "Malformed aws-chunked body.") from None
        if not await fill(size + 2):
            raise S3Error("IncompleteBody")
        chunk = bytes(buffer[:size])
        del buffer[: size + 2]
        if signed_chunks:
            given = extension.partition("chunk-signature=")[2]
            text = sigv4.chunk_string_to_sign(
                signed.amz_date, signed.scope, previous, hashlib.sha256(chunk).hexdigest()
            )
            expected = sigv4.sign(signed.key, text)
            if not sigv4.same(given, expected):
                raise S3Error("SignatureDoesNotMatch")
            previous = expected
        if size == 0:
            break
        crc = zlib.crc32(chunk, crc)
        yield chunk
    while True:
        raw = await line() if buffer or await fill(1) else b""
        if not raw:
            break
        name, _, value = raw.decode("latin-1").partition(":")
        trailer[name.strip().lower()] = value.strip()
    given_crc = trailer.get("x-amz-checksum-crc32")
    if given_crc is not None:
        expected_crc = base64.b64encode(crc.to_bytes(4, "big")).decode()
        if given_crc != expected_crc:
            raise S3Error(
                "BadDigest", "The CRC32 you specified did not match the calculated checksum."
            )
