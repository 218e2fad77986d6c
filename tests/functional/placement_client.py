"""An in-process cloud with identity and placement, and a client that speaks placement."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from onestack.cloud import Cloud
from onestack.core.config import async_url
from onestack.core.db import create_database_if_missing
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

DEFAULT_VERSION = "1.39"


class Placement:
    """Calls ``/placement`` as admin at one microversion (or another, per call)."""

    def __init__(self, cloud: CloudClient, token: str, version: str = DEFAULT_VERSION):
        self.cloud = cloud
        self.token = token
        self.version = version

    async def call(
        self, method: str, path: str, *, version: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"placement {version or self.version}"}
        headers.update(kwargs.pop("headers", {}))
        return await self.cloud.call(
            method, f"/placement{path}", self.token, headers=headers, **kwargs
        )

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """Call and check the status; the JSON body (or None)."""
        response = await self.call(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None

    async def error(self, method: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        """Call, check the status and placement's error shape; the one error entry."""
        response = await self.call(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        [entry] = response.json()["errors"]
        assert entry["status"] == status and entry["request_id"].startswith("req-")
        return dict(entry)

    async def provider(
        self,
        name: str | None = None,
        inventory: dict[str, Any] | None = None,
        *,
        parent: str | None = None,
        traits: list[str] | None = None,
        aggregates: list[str] | None = None,
    ) -> str:
        """A new provider with inventories (``{"VCPU": 8}`` or full records), traits and
        aggregates; its uuid."""
        ident = str(uuid.uuid4())
        body: dict[str, Any] = {"name": name or f"rp-{ident[:8]}", "uuid": ident}
        if parent:
            body["parent_provider_uuid"] = parent
        await self.ok("POST", "/resource_providers", json=body)
        generation = 0
        if inventory:
            records = {
                cls: value if isinstance(value, dict) else {"total": value}
                for cls, value in inventory.items()
            }
            done = await self.ok(
                "PUT",
                f"/resource_providers/{ident}/inventories",
                json={"resource_provider_generation": generation, "inventories": records},
            )
            generation = done["resource_provider_generation"]
        if traits:
            for trait in traits:
                if trait.startswith("CUSTOM_"):
                    await self.call("PUT", f"/traits/{trait}")
            done = await self.ok(
                "PUT",
                f"/resource_providers/{ident}/traits",
                json={"resource_provider_generation": generation, "traits": traits},
            )
            generation = done["resource_provider_generation"]
        if aggregates:
            await self.ok(
                "PUT",
                f"/resource_providers/{ident}/aggregates",
                json={"resource_provider_generation": generation, "aggregates": aggregates},
            )
        return ident

    async def allocate(
        self,
        consumer: str,
        allocations: dict[str, dict[str, int]],
        *,
        generation: int | None = None,
        project: str = "project-a",
        user: str = "user-a",
        consumer_type: str = "INSTANCE",
    ) -> httpx.Response:
        body = {
            "allocations": {rp: {"resources": res} for rp, res in allocations.items()},
            "project_id": project,
            "user_id": user,
            "consumer_generation": generation,
            "consumer_type": consumer_type,
        }
        return await self.call("PUT", f"/allocations/{consumer}", json=body)


@asynccontextmanager
async def placement_cloud(
    data_dir: Path, database_url: str | None = None, **placement_settings: Any
) -> AsyncIterator[Placement]:
    """Identity and placement in one process (placement on ``database_url`` if given)."""
    settings = make_settings(data_dir, port=8000)
    settings.services = ["identity", "placement"]
    if database_url:
        url = async_url(database_url)
        await create_database_if_missing(url)
        settings.database.urls["placement"] = url
    for name, value in placement_settings.items():
        setattr(settings.placement, name, value)
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    try:
        cloud = CloudClient(instance, client)
        yield Placement(cloud, await cloud.token())
    finally:
        await client.aclose()
        await instance.stop()
