"""An in-process cloud with identity and object storage, and a small Swift client over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from onestack.cloud import Cloud
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings


class Swift:
    """Calls Swift's API as one project's user."""

    def __init__(self, http: httpx.AsyncClient, token: str | None, account: str):
        self.http = http
        self.token = token
        self.account = account
        self.base = f"/object/v1/{account}"

    async def __call__(
        self, method: str, path: str = "", *, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.token:
            sent["X-Auth-Token"] = self.token
        return await self.http.request(method, self.base + path, headers=sent, **kw)

    def anonymous(self) -> Swift:
        return Swift(self.http, None, self.account)


async def object_cloud(tmp_path: Path, **object_settings: Any) -> tuple[Cloud, CloudClient]:
    settings = make_settings(tmp_path, port=8000)
    settings.services = ["identity", "object"]
    settings.object.agents = False
    settings.object.info_ttl = 0
    for key, value in object_settings.items():
        setattr(settings.object, key, value)
    cloud = Cloud(settings)
    await cloud.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cloud.app), base_url="http://127.0.0.1:8000"
    )
    return cloud, CloudClient(cloud, client)


async def swift_for(client: CloudClient, token: str) -> Swift:
    response = await client.http.get(
        "/identity/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    )
    project = response.json()["token"]["project"]["id"]
    return Swift(client.http, token, f"AUTH_{project}")


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
