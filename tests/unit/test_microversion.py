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
