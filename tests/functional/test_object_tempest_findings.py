"""What Tempest's object storage API tests found, kept as tests (CI does not run Tempest)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.functional.object_helpers import Swift, object_cloud, swift_for


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def swift(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Swift]:
    cloud, client = await object_cloud(tmp_path_factory.mktemp("object-tempest"))
    try:
        yield await swift_for(client, await client.token())
    finally:
        await client.http.aclose()
        await cloud.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_account_headers_tempest_checks(swift: Swift) -> None:
    empty = await swift("GET")
    assert empty.status_code == 204
    assert "x-timestamp" in empty.headers
    assert empty.headers["content-type"] == "text/plain; charset=utf-8"
    assert not [h for h in empty.headers if h.startswith("x-account-storage-policy-")]
    assert (await swift("PUT", "/c1")).status_code == 201
    listed = await swift("GET", "?format=json")
    for response in (listed, await swift("HEAD")):
        assert response.headers["x-account-container-count"] == "1"
        usage = "x-account-storage-policy-policy-0-"
        assert response.headers[f"{usage}container-count"] == "1"
        assert f"{usage}object-count" in response.headers
        assert f"{usage}bytes-used" in response.headers


@pytest.mark.asyncio(loop_scope="module")
async def test_empty_container_listing_names_its_type(swift: Swift) -> None:
    assert (await swift("PUT", "/c2")).status_code == 201
    listing = await swift("GET", "/c2")
    assert listing.status_code == 204
    assert listing.headers["content-type"] == "text/plain; charset=utf-8"
