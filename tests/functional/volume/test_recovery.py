"""A restart of the all-in-one process settles the work its in-process bus lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from onestack.cloud import Cloud
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.functional.volume.conftest import VolumeCloud

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def started(data_dir: Path) -> VolumeCloud:
    settings = make_settings(data_dir, port=8000)
    settings.services = ["identity", "volume"]
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = VolumeCloud(instance, client)
    cloud.admin = await cloud.token()
    return cloud


async def stopped(cloud: VolumeCloud) -> None:
    await cloud.http.aclose()
    await cloud.cloud.stop()


async def test_restart_fails_lost_creates_and_resends_deletes(tmp_path: Path) -> None:
    cloud = await started(tmp_path)
    doomed = await cloud.volume(name="doomed")
    grown = await cloud.volume(name="growing")
    [agent] = cloud.cloud.units["volume"].agents[:1]
    hanging: list[asyncio.Task[object]] = []

    async def never(*_args: object) -> None:
        """Driver work that would never end: the process stops in the middle of it."""
        hanging.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.Event().wait()

    agent.driver.create_volume = never  # type: ignore[method-assign]
    agent.driver.delete_volume = never  # type: ignore[method-assign]
    agent.driver.extend_volume = never  # type: ignore[method-assign]
    stuck = await cloud.v3("POST", "/volumes", json={"volume": {"size": 1, "name": "stuck"}})
    stuck_id = stuck.json()["volume"]["id"]
    await cloud.v3("POST", f"/volumes/{grown['id']}/action", json={"os-extend": {"new_size": 5}})
    await cloud.v3("DELETE", f"/volumes/{doomed['id']}")
    for ident, status in (
        (stuck_id, "creating"),
        (doomed["id"], "deleting"),
        (grown["id"], "extending"),
    ):
        assert (await cloud.v3("GET", f"/volumes/{ident}")).json()["volume"]["status"] == status
    project = grown["os-vol-tenant-attr:tenant_id"]
    used = (await cloud.v3("GET", f"/os-quota-sets/{project}?usage=true")).json()["quota_set"]
    assert used["gigabytes"]["in_use"] == 7
    for task in hanging:
        task.cancel()
    await stopped(cloud)

    cloud = await started(tmp_path)
    try:
        failed = (await cloud.v3("GET", f"/volumes/{stuck_id}")).json()["volume"]
        assert failed["status"] == "error"
        messages = (await cloud.v3("GET", f"/messages?resource_uuid={stuck_id}")).json()
        assert "restart" in messages["messages"][0]["user_message"]
        back = (await cloud.v3("GET", f"/volumes/{grown['id']}")).json()["volume"]
        assert (back["status"], back["size"]) == ("available", 1)
        await cloud.gone("volume", doomed["id"])
        used = (await cloud.v3("GET", f"/os-quota-sets/{project}?usage=true")).json()
        assert used["quota_set"]["gigabytes"]["in_use"] == 2  # the failed one and "growing"
    finally:
        await stopped(cloud)
