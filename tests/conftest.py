"""Fixtures shared by the unit and functional tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onestack.cloud import Cloud
from onestack.core.config import Settings, load_settings
from onestack.identity.bootstrap import CatalogEntry, bootstrap
from onestack.identity.unit import IdentityUnit

ADMIN_PASSWORD = "admin-secret"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test process, with cheap password hashing so suites stay fast."""
    settings = load_settings(data_dir=data_dir, **overrides)
    settings.identity.argon2_time_cost = 1
    settings.identity.argon2_memory_kib = 1024
    # In-process clouds build no real data plane (the system tests ask for linuxbridge).
    if "network" not in overrides:
        settings.network.driver = settings.network.driver or "noop"
    return settings


class IdentityClient:
    """An in-process identity API with helpers to get tokens and call it."""

    def __init__(self, unit: IdentityUnit, client: httpx.AsyncClient):
        self.unit = unit
        self.http = client

    async def token(
        self,
        user: str = "admin",
        password: str = ADMIN_PASSWORD,
        project: str | None = "admin",
        **scope: Any,
    ) -> str:
        """A token for ``user``, scoped to ``project`` (or as ``scope`` says)."""
        body: dict[str, Any] = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                }
            }
        }
        if project:
            body["auth"]["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
        elif scope:
            body["auth"]["scope"] = scope
        response = await self.http.post("/v3/auth/tokens", json=body)
        assert response.status_code == 201, response.text
        return response.headers["x-subject-token"]

    async def call(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)


async def start_identity(settings: Settings) -> tuple[IdentityUnit, httpx.AsyncClient]:
    """An identity unit started and bootstrapped, and an in-memory client for it."""
    unit = IdentityUnit(settings, None)
    await unit.start()
    await bootstrap(
        unit.service,
        admin_password=ADMIN_PASSWORD,
        service_password="service-secret",
        catalog=[CatalogEntry("identity", "keystone", "http://identity.test/v3")],
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=unit.app), base_url="http://identity.test"
    )
    return unit, client


@pytest.fixture
async def identity(tmp_path: Path) -> AsyncIterator[IdentityClient]:
    """A bootstrapped identity service on SQLite, driven in-process."""
    unit, client = await start_identity(make_settings(tmp_path))
    try:
        yield IdentityClient(unit, client)
    finally:
        await client.aclose()
        await unit.stop()


class CloudClient:
    """A whole in-process cloud (as ``onestack up`` builds it) and helpers to call it."""

    def __init__(self, cloud: Cloud, client: httpx.AsyncClient):
        self.cloud = cloud
        self.http = client

    async def token(
        self, user: str = "admin", password: str = ADMIN_PASSWORD, project: str = "admin"
    ) -> str:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        response = await self.http.post("/identity/v3/auth/tokens", json=body)
        assert response.status_code == 201, response.text
        return response.headers["x-subject-token"]

    async def call(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def project_member(self, admin: str, name: str) -> tuple[str, str]:
        """A new project with a member user; returns (project id, the member's token)."""
        project = await self.call(
            "POST", "/identity/v3/projects", admin, json={"project": {"name": name}}
        )
        user = await self.call(
            "POST",
            "/identity/v3/users",
            admin,
            json={"user": {"name": f"{name}-user", "password": "pw"}},
        )
        role = await self.call("GET", "/identity/v3/roles?name=member", admin)
        project_id = project.json()["project"]["id"]
        grant = (
            f"/identity/v3/projects/{project_id}/users/{user.json()['user']['id']}"
            f"/roles/{role.json()['roles'][0]['id']}"
        )
        assert (await self.call("PUT", grant, admin)).status_code == 204
        return project_id, await self.token(f"{name}-user", "pw", name)


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[CloudClient]:
    """Identity, image and network in one process, like ``onestack up``, driven in memory."""
    settings = make_settings(tmp_path, port=8000)
    settings.services = ["identity", "image", "network"]
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    try:
        yield CloudClient(instance, client)
    finally:
        await client.aclose()
        await instance.stop()
