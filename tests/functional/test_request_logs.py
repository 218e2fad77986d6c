"""One structured log line per request, with id, user, project, status and duration."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import IdentityClient


async def test_each_request_logs_one_line(
    identity: IdentityClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = await identity.token()
    caplog.set_level(logging.INFO, logger="onestack.access")
    caplog.clear()
    response = await identity.call("GET", "/v3/users", token)
    lines = [r.getMessage() for r in caplog.records if r.name == "onestack.access"]
    assert len(lines) == 1
    line = lines[0]
    request_id = response.headers["x-openstack-request-id"]
    for part in (
        f"request_id={request_id}",
        "service=identity",
        "method=GET",
        "path=/v3/users",
        "status=200",
        "duration_ms=",
    ):
        assert part in line
    assert "user=-" not in line and "project=-" not in line
