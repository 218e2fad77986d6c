"""Microversion negotiation as Nova, Cinder and Placement do it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onestack.core.asgi.errors import BadRequest, NotAcceptable


@total_ordering
@dataclass(frozen=True)
class Version:
    """A ``major.minor`` API version."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``"2.53"``; 400 when it is not a version."""
        major, dot, minor = text.strip().partition(".")
        if not dot or not major.isdigit() or not minor.isdigit():
            raise BadRequest(f"Invalid microversion {text!r}: expected MAJOR.MINOR.")
        return cls(int(major), int(minor))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class MicroversionPolicy:
    """The versions one service supports and the headers it speaks."""

    service_type: str
    minimum: Version
    maximum: Version
    legacy_header: str | None = None

    def negotiate(self, request: Request) -> Version:
        """The version a request asks for (``latest`` and absence handled); 406 if unsupported."""
        text = None
        header = request.headers.get("openstack-api-version")
        if header:
            for item in header.split(","):
                kind, _, value = item.strip().partition(" ")
                if kind.lower() == self.service_type:
                    text = value
        if text is None and self.legacy_header:
            text = request.headers.get(self.legacy_header)
        if text is None:
            return self.minimum
        if text.strip().lower() == "latest":
            return self.maximum
        version = Version.parse(text)
        if not self.minimum <= version <= self.maximum:
            raise NotAcceptable(
                f"Version {version} is not supported by the API. Minimum is {self.minimum} "
                f"and maximum is {self.maximum}.",
                min_version=str(self.minimum),
                max_version=str(self.maximum),
            )
        return version

    def response_headers(self, version: Version) -> dict[str, str]:
        """Headers that tell the client which version answered."""
        headers = {
            "OpenStack-API-Version": f"{self.service_type} {version}",
            "Vary": "OpenStack-API-Version",
        }
        if self.legacy_header:
            headers[self.legacy_header] = str(version)
            headers["Vary"] += f", {self.legacy_header}"
        return headers


def request_version(request: Request) -> Version:
    """The version :class:`MicroversionMiddleware` negotiated for ``request``."""
    version: Version = request.scope["state"]["microversion"]
    return version


class MicroversionMiddleware:
    """Negotiates the microversion of every request once, before the routes see it.

    The version lands in ``scope["state"]["microversion"]`` (read it with
    :func:`request_version`), and every response, errors included, says which
    version answered. An unsupported version is a 406, garbage a 400.
    """

    def __init__(self, app: ASGIApp, policy: MicroversionPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        version = self.policy.negotiate(Request(scope))
        scope.setdefault("state", {})["microversion"] = version
        extra = [
            (name.lower().encode(), value.encode())
            for name, value in self.policy.response_headers(version).items()
        ]

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in extra}
                kept = [h for h in message.get("headers", []) if h[0].lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        await self.app(scope, receive, send_with_version)
