"""Calling other onestack services the way OpenStack services do: a service token and the catalog.

One code path for one process and many hosts: in the all-in-one process the
transport is the root ASGI app in memory; across hosts it is plain HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx

from onestack.core.asgi.errors import APIError


class ServiceAuthError(APIError):
    """The service account could not authenticate."""

    status = 503


class ServiceClient:
    """Authenticates as the service user and sends requests to services found in the catalog."""

    RENEW_BEFORE = dt.timedelta(minutes=5)

    def __init__(
        self,
        identity_url: str,
        username: str,
        password: str,
        *,
        project: str = "service",
        domain: str = "default",
        interface: str = "internal",
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
    ):
        self.identity_url = identity_url.rstrip("/")
        self._credentials = (username, password, project, domain)
        self.interface = interface
        self.http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._token: str | None = None
        self._expires = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._catalog: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """A valid service token, renewed a few minutes before it expires."""
        async with self._lock:
            now = dt.datetime.now(dt.UTC)
            if self._token is None or self._expires - now < self.RENEW_BEFORE:
                await self._authenticate()
            assert self._token is not None
            return self._token

    async def _authenticate(self) -> None:
        username, password, project, domain = self._credentials
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": username, "domain": {"id": domain}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": domain}}},
            }
        }
        response = await self.http.post(f"{self.identity_url}/auth/tokens", json=body)
        if response.status_code != 201:
            raise ServiceAuthError(
                f"service user {username!r} could not authenticate: {response.status_code}"
            )
        token = response.json()["token"]
        self._token = response.headers["x-subject-token"]
        self._expires = dt.datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
        self._catalog = token.get("catalog", [])

    async def endpoint(self, service_type: str) -> str:
        """The URL of ``service_type`` for this client's interface."""
        await self.token()
        for service in self._catalog:
            if service["type"] != service_type:
                continue
            for endpoint in service["endpoints"]:
                if endpoint["interface"] == self.interface:
                    return str(endpoint["url"]).rstrip("/")
        raise APIError(
            f"no {self.interface} endpoint for {service_type!r} in the catalog", status=503
        )

    async def request(
        self, service_type: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """Send ``method path`` to a service, with the service token."""
        url = f"{await self.endpoint(service_type)}{path}"
        headers = {"X-Auth-Token": await self.token(), **kwargs.pop("headers", {})}
        return await self.http.request(method, url, headers=headers, **kwargs)

    async def close(self) -> None:
        await self.http.aclose()
