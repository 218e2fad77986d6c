"""Concurrent boots through the whole in-process cloud: the conductor's shared candidates
(one placement answer used by many requests) never put more on a host than it holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from onestack.cloud import Cloud
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

V21 = "/compute/v2.1"
HEADERS = {"OpenStack-API-Version": "compute 2.90"}
PLACEMENT = {"OpenStack-API-Version": "placement 1.36"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cloud(tmp_path_factory: Any) -> AsyncIterator[CloudClient]:
    settings = make_settings(tmp_path_factory.mktemp("boots"), port=8000)
    settings.services = ["identity", "image", "network", "placement", "compute"]
    settings.compute.fake_hosts = 2
    settings.compute.report_interval = 1.0
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = CloudClient(instance, client)
    token = await cloud.token()
    for _ in range(200):
        providers = await cloud.call("GET", "/placement/resource_providers", token)
        if len(providers.json()["resource_providers"]) == 2:
            break
        await asyncio.sleep(0.05)
    try:
        yield cloud
    finally:
        await client.aclose()
        await instance.stop()


async def free_memory(cloud: CloudClient, token: str) -> dict[str, int]:
    """MEMORY_MB each compute provider can still give, by provider uuid."""
    free = {}
    providers = await cloud.call("GET", "/placement/resource_providers", token, headers=PLACEMENT)
    for provider in providers.json()["resource_providers"]:
        base = f"/placement/resource_providers/{provider['uuid']}"
        inventory = await cloud.call("GET", f"{base}/inventories", token, headers=PLACEMENT)
        memory = inventory.json()["inventories"]["MEMORY_MB"]
        usages = await cloud.call("GET", f"{base}/usages", token, headers=PLACEMENT)
        capacity = int((memory["total"] - memory["reserved"]) * memory["allocation_ratio"])
        free[provider["uuid"]] = capacity - usages.json()["usages"].get("MEMORY_MB", 0)
    return free


async def test_concurrent_boots_fill_hosts_exactly(cloud: CloudClient) -> None:
    token = await cloud.token()
    project = (await cloud.call("GET", "/identity/v3/auth/projects", token)).json()["projects"]
    admin_project = next(p["id"] for p in project if p["name"] == "admin")
    unlimited = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
    set_quota = await cloud.call("PUT", f"{V21}/os-quota-sets/{admin_project}", token,
                                 headers=HEADERS, json=unlimited)  # fmt: skip
    assert set_quota.status_code == 200, set_quota.text
    free = await free_memory(cloud, token)
    # Two servers fit on each host, a third on none: the rest must end in ERROR.
    ram = min(free.values()) // 2 - 1
    assert all(value // ram == 2 for value in free.values()), free
    flavor = await cloud.call("POST", f"{V21}/flavors", token, headers=HEADERS, json={
        "flavor": {"name": "half", "ram": ram, "vcpus": 1, "disk": 0, "id": "half"}})  # fmt: skip
    assert flavor.status_code == 200, flavor.text
    image = await cloud.call("POST", "/image/v2/images", token, json={
        "name": "img", "disk_format": "raw", "container_format": "bare"})  # fmt: skip
    image_id = image.json()["id"]
    uploaded = await cloud.call("PUT", f"/image/v2/images/{image_id}/file", token,
                                content=b"\0" * 512,
                                headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert uploaded.status_code == 204, uploaded.text

    async def boot(index: int) -> str:
        body = {"server": {"name": f"c{index}", "imageRef": image_id, "flavorRef": "half",
                           "networks": "none"}}  # fmt: skip
        created = await cloud.call("POST", f"{V21}/servers", token, headers=HEADERS, json=body)
        assert created.status_code == 202, created.text
        server_id: str = created.json()["server"]["id"]
        return server_id

    ids = await asyncio.gather(*(boot(index) for index in range(7)))
    states: dict[str, str] = {}
    for _ in range(400):
        for server_id in ids:
            found = await cloud.call("GET", f"{V21}/servers/{server_id}", token, headers=HEADERS)
            states[server_id] = found.json()["server"]["status"]
        if "BUILD" not in states.values():
            break
        await asyncio.sleep(0.05)
    assert sorted(states.values()) == ["ACTIVE"] * 4 + ["ERROR"] * 3, states
    assert all(value >= 0 for value in (await free_memory(cloud, token)).values())
    for server_id in ids:
        await cloud.call("DELETE", f"{V21}/servers/{server_id}", token, headers=HEADERS)
