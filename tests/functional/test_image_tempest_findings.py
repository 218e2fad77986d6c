"""What Tempest's image API tests found, kept as tests (CI does not run Tempest)."""

from __future__ import annotations

from tests.conftest import CloudClient
from tests.functional.test_image_api import new_image

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


async def test_patch_reads_operations_named_by_their_key(cloud: CloudClient) -> None:
    """Tempest's images client sends ``{"replace": "/name", "value": ...}``."""
    admin = await cloud.token()
    image = await new_image(cloud, admin, name="before")
    path = f"/image/v2/images/{image['id']}"
    changes = [
        {"replace": "/name", "value": "after"},
        {"add": "/colour", "value": "blue"},
        {"op": "replace", "path": "/min_ram", "value": 64},
    ]
    patched = await cloud.call("PATCH", path, admin, json=changes, headers=PATCH)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["colour"], body["min_ram"]) == ("after", "blue", 64)
    removed = await cloud.call("PATCH", path, admin, json=[{"remove": "/colour"}], headers=PATCH)
    assert "colour" not in removed.json()
    for bad in ([{"value": 1}], [{"add": "/a", "remove": "/b"}], ["replace"]):
        response = await cloud.call("PATCH", path, admin, json=bad, headers=PATCH)
        assert response.status_code == 400, bad


async def test_empty_image_id_is_404(cloud: CloudClient) -> None:
    admin = await cloud.token()
    for method in ("GET", "DELETE", "PATCH"):
        response = await cloud.call(method, "/image/v2/images/", admin, json=[], headers=PATCH)
        assert response.status_code == 404, method
        assert response.json()["code"] == "404 Not Found"
