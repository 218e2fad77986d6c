"""Block storage functional tests: an in-process cloud with two file backends, and helpers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from onestack.cloud import Cloud
from onestack.core.config import VolumeBackendSettings
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

V3 = "/volume/v3"
LATEST = {"OpenStack-API-Version": "volume 3.70"}
GIB = 1 << 30


class VolumeCloud(CloudClient):
    """A whole cloud in memory, with Cinder helpers."""

    admin: str = ""

    async def v3(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**LATEST, **kwargs.pop("headers", {})}
        return await self.call(
            method, f"{V3}{path}", token or self.admin, headers=headers, **kwargs
        )

    async def wait(
        self,
        kind: str,
        ident: str,
        statuses: tuple[str, ...],
        token: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Poll ``/<kind>s/{id}`` until its status is one of ``statuses``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.v3("GET", f"/{kind}s/{ident}", token)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()[kind]
            if body["status"] in statuses:
                return body
            assert asyncio.get_running_loop().time() < deadline, f"{kind} stuck in {body['status']}"
            await asyncio.sleep(0.05)

    async def gone(self, kind: str, ident: str, token: str | None = None) -> None:
        for _ in range(600):
            if (await self.v3("GET", f"/{kind}s/{ident}", token)).status_code == 404:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{kind} {ident} was not deleted")

    async def volume(self, token: str | None = None, **body: Any) -> dict[str, Any]:
        """A new volume, waited for until available."""
        body.setdefault("size", 1)
        response = await self.v3("POST", "/volumes", token, json={"volume": body})
        assert response.status_code == 202, response.text
        return await self.wait("volume", response.json()["volume"]["id"], ("available",), token)

    def path_of(self, volume_id: str, backend: str = "file") -> Path:
        data_dir = self.cloud.settings.data_dir
        found = list((data_dir / "volumes" / backend).glob(f"volume-{volume_id}.*"))
        assert found, f"no file for volume {volume_id} on {backend}"
        return found[0]


def write_pattern(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def digest(path: Path, span: int = 16 << 20) -> str:
    """SHA-256 of the first ``span`` bytes and the size (tests write within the first MiBs)."""
    sha = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as handle:
        sha.update(handle.read(span))
    return sha.hexdigest()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def volume_cloud(tmp_path_factory: Any) -> AsyncIterator[VolumeCloud]:
    """Identity, image, volume and object storage in one process; backends ``file`` and
    ``file2`` (ssd) in zone nova, and ``qcow`` (qcow2 files) alone in zone ``az-qcow``."""
    settings = make_settings(tmp_path_factory.mktemp("volume"), port=8000)
    settings.services = ["identity", "image", "volume", "object"]
    settings.object.agents = False
    settings.volume.report_interval = 1.0
    settings.volume.backends = [
        VolumeBackendSettings(name="file"),
        VolumeBackendSettings(name="file2", capabilities={"disk": "ssd"}),
        VolumeBackendSettings(name="qcow", volume_format="qcow2", availability_zone="az-qcow"),
    ]
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = VolumeCloud(instance, client)
    cloud.admin = await cloud.token()
    try:
        yield cloud
    finally:
        await client.aclose()
        await instance.stop()
