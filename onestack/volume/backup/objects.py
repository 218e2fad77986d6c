"""The object store (Swift v1 API, found in the catalog) as the backup agent uses it.

Backups are written with the service account into its own account, container
``volumebackups`` unless the request named another.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from onestack.core.asgi.errors import APIError
from onestack.core.client import ServiceClient


class ObjectStoreError(Exception):
    """The object store refused or could not be reached."""


class ObjectStore:
    """Containers and objects of the service account."""

    def __init__(self, client: ServiceClient):
        self.client = client

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.client.request("object-store", method, path, **kwargs)
        except (httpx.HTTPError, APIError) as exc:
            raise ObjectStoreError(f"object storage could not be reached: {exc}") from None

    @staticmethod
    def _path(container: str, name: str | None = None) -> str:
        path = f"/{quote(container, safe='')}"
        return f"{path}/{quote(name, safe='/')}" if name else path

    async def ensure_container(self, container: str) -> None:
        response = await self._request("PUT", self._path(container))
        if response.status_code not in (201, 202, 204):
            raise ObjectStoreError(
                f"container {container} could not be created: {response.status_code}"
            )

    async def put(self, container: str, name: str, data: bytes) -> None:
        response = await self._request(
            "PUT", self._path(container, name), content=data,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        if response.status_code != 201:
            raise ObjectStoreError(f"object {name} could not be stored: {response.status_code}")

    async def get(self, container: str, name: str) -> bytes:
        response = await self._request("GET", self._path(container, name))
        if response.status_code != 200:
            raise ObjectStoreError(f"object {name} could not be read: {response.status_code}")
        return response.content

    async def delete(self, container: str, name: str) -> None:
        response = await self._request("DELETE", self._path(container, name))
        if response.status_code not in (204, 404):
            raise ObjectStoreError(f"object {name} could not be deleted: {response.status_code}")
