"""Microversion negotiation."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from onestack.core.asgi.errors import BadRequest, NotAcceptable
from onestack.core.asgi.microversion import MicroversionPolicy, Version

POLICY = MicroversionPolicy(
    "compute", Version(2, 1), Version(2, 90), legacy_header="X-OpenStack-Nova-API-Version"
)


def request(**headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw})


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({}, Version(2, 1)),
        ({"OpenStack-API-Version": "compute 2.53"}, Version(2, 53)),
        ({"OpenStack-API-Version": "volume 3.5, compute 2.10"}, Version(2, 10)),
        ({"X-OpenStack-Nova-API-Version": "2.60"}, Version(2, 60)),
        ({"OpenStack-API-Version": "compute latest"}, Version(2, 90)),
    ],
)
def test_negotiation(headers: dict[str, str], expected: Version) -> None:
    assert POLICY.negotiate(request(**headers)) == expected


def test_unsupported_version_is_406_and_garbage_400() -> None:
    with pytest.raises(NotAcceptable):
        POLICY.negotiate(request(**{"OpenStack-API-Version": "compute 2.999"}))
    with pytest.raises(BadRequest):
        POLICY.negotiate(request(**{"OpenStack-API-Version": "compute two"}))


def test_response_headers_name_the_version() -> None:
    headers = POLICY.response_headers(Version(2, 53))
    assert headers["OpenStack-API-Version"] == "compute 2.53"
    assert headers["X-OpenStack-Nova-API-Version"] == "2.53"


async def test_middleware_negotiates_once_and_labels_every_response() -> None:
    from starlette.responses import PlainTextResponse

    from onestack.core.asgi.microversion import MicroversionMiddleware, request_version

    policy = MicroversionPolicy("placement", Version(1, 0), Version(1, 39))
    seen: list[Version] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        seen.append(request_version(Request(scope)))
        await PlainTextResponse("ok", status_code=404)(scope, receive, send)  # type: ignore[arg-type]

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": [(b"openstack-api-version", b"placement 1.20")]}
    await MicroversionMiddleware(app, policy)(scope, None, send)  # type: ignore[arg-type]
    assert seen == [Version(1, 20)]
    headers = dict(sent[0]["headers"])
    assert headers[b"openstack-api-version"] == b"placement 1.20"
    assert headers[b"vary"] == b"OpenStack-API-Version"
    with pytest.raises(NotAcceptable) as caught:
        bad = {"type": "http", "headers": [(b"openstack-api-version", b"placement 2.0")]}
        await MicroversionMiddleware(app, policy)(bad, None, send)  # type: ignore[arg-type]
    assert caught.value.extra == {"min_version": "1.0", "max_version": "1.39"}
