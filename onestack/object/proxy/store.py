"""The proxy's reach into the cluster: accounts, containers and objects by name, no auth.

The Swift API handlers, the S3 view and the agents (expirer, bulk operations)
all go through this one layer. It finds replicas in the rings, writes with a
quorum, reads with failover, and caches container and account info briefly
(invalidated at once by this process's own writes).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from onestack.object import timestamps
from onestack.object.cluster import Cluster
from onestack.object.proxy.replicas import Replicas, UploadFailed, best_status
from onestack.object.ring import RingSet
from onestack.object.storage.backend import BackendResponse


@dataclass
class ContainerInfo:
    """What the proxy needs to know about a container for each object request."""

    object_count: int
    bytes_used: int
    headers: dict[str, str]

    @property
    def read_acl(self) -> str:
        return self.headers.get("x-container-read", "")

    @property
    def write_acl(self) -> str:
        return self.headers.get("x-container-write", "")

    def meta(self, name: str) -> str | None:
        return self.headers.get(f"x-container-meta-{name}")

    def sysmeta(self, name: str) -> str | None:
        return self.headers.get(f"x-container-sysmeta-{name}")


@dataclass
class AccountInfo:
    container_count: int
    object_count: int
    bytes_used: int
    headers: dict[str, str] = field(default_factory=dict)

    def meta(self, name: str) -> str | None:
        return self.headers.get(f"x-account-meta-{name}")


@dataclass
class ObjectResponse:
    """An object read: status, headers, and (for GET) the streamed body."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes] | None = None
    source: BackendResponse | None = None

    async def close(self) -> None:
        if self.body is not None and hasattr(self.body, "aclose"):
            await self.body.aclose()
        if self.source is not None:
            await self.source.close()

    async def read(self) -> bytes:
        if self.body is None:
            return b""
        try:
            return b"".join([chunk async for chunk in self.body])
        finally:
            await self.close()


def _int(headers: dict[str, str], name: str) -> int:
    try:
        return int(headers.get(name, "0"))
    except ValueError:
        return 0


class Store:
    """Accounts, containers and objects across the cluster's replicas."""

    def __init__(self, cluster: Cluster, *, info_ttl: float = 5.0):
        self.cluster = cluster
        self.replicas = Replicas(cluster)
        self.info_ttl = info_ttl
        self._info: dict[tuple[str, ...], tuple[float, Any]] = {}

    @property
    def rings(self) -> RingSet:
        return self.cluster.rings

    # -- info cache -----------------------------------------------------------------------

    def _cached(self, key: tuple[str, ...]) -> Any:
        hit = self._info.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def _remember(self, key: tuple[str, ...], value: Any) -> None:
        if len(self._info) > 100_000:
            self._info.clear()
        self._info[key] = (time.monotonic() + self.info_ttl, value)

    def forget(self, account: str, container: str | None = None) -> None:
        self._info.pop((account, container) if container is not None else (account,), None)

    # -- accounts -------------------------------------------------------------------------

    async def account_info(self, account: str) -> AccountInfo | None:
        cached = self._cached((account,))
        if cached is not None:
            return cached if isinstance(cached, AccountInfo) else None
        response = await self.account_request("HEAD", account)
        info: AccountInfo | None = None
        if response.ok:
            headers = response.headers
            info = AccountInfo(
                _int(headers, "x-account-container-count"),
                _int(headers, "x-account-object-count"),
                _int(headers, "x-account-bytes-used"),
                headers,
            )
        if response.status in (200, 204, 404):
            self._remember((account,), info or False)
        return info

    async def account_request(
        self, method: str, account: str, query: dict[str, str] | None = None
    ) -> BackendResponse:
        ring = self.rings.account
        part = ring.get_part(account)
        response, _ = await self.replicas.read(ring, part, method, (account, "", ""), {}, query)
        return response

    async def write_account(self, method: str, account: str, headers: dict[str, str]) -> int:
        ring = self.rings.account
        part = ring.get_part(account)
        timestamp = timestamps.now()
        sent = {**headers, "x-timestamp": timestamp}
        status, _ = await self.replicas.write(ring, part, method, (account, "", ""), lambda i: sent)
        self.forget(account)
        return status

    # -- containers -----------------------------------------------------------------------

    async def container_info(self, account: str, container: str) -> ContainerInfo | None:
        cached = self._cached((account, container))
        if cached is not None:
            return cached if isinstance(cached, ContainerInfo) else None
        response = await self.container_request("HEAD", account, container)
        info: ContainerInfo | None = None
        if response.ok:
            info = ContainerInfo(
                _int(response.headers, "x-container-object-count"),
                _int(response.headers, "x-container-bytes-used"),
                response.headers,
            )
        if response.status in (200, 204, 404):
            self._remember((account, container), info or False)
        return info

    async def container_request(
        self, method: str, account: str, container: str, query: dict[str, str] | None = None
    ) -> BackendResponse:
        ring = self.rings.container
        part = ring.get_part(account, container)
        response, _ = await self.replicas.read(
            ring, part, method, (account, container, ""), {}, query
        )
        return response

    async def write_container(
        self, method: str, account: str, container: str, headers: dict[str, str]
    ) -> int:
        """PUT, POST or DELETE a container on its replicas; each tells one account replica."""
        ring = self.rings.container
        part = ring.get_part(account, container)
        account_part, account_nodes = self.rings.account.get_nodes(account)
        timestamp = timestamps.now()

        def headers_for(index: int) -> dict[str, str]:
            node = account_nodes[index % len(account_nodes)]
            return {
                **headers,
                "x-timestamp": timestamp,
                "x-account-host": node.address,
                "x-account-device": node.device,
                "x-account-partition": str(account_part),
            }

        status, _ = await self.replicas.write(
            ring, part, method, (account, container, ""), headers_for
        )
        self.forget(account, container)
        self.forget(account)
        return status

    async def list_objects(
        self, account: str, container: str, **params: str
    ) -> tuple[int, list[dict[str, Any]], dict[str, str]]:
        """One page of a container listing as rows (status 404 when there is no container)."""
        response = await self.container_request(
            "GET", account, container, {k: v for k, v in params.items() if v != ""}
        )
        if not response.ok:
            await response.close()
            return response.status, [], response.headers
        rows = json.loads(await response.read() or b"[]")
        return response.status, rows, response.headers

    async def iter_objects(
        self, account: str, container: str, prefix: str = ""
    ) -> AsyncIterator[dict[str, Any]]:
        """Every object row of a container with ``prefix``, page after page."""
        marker = ""
        while True:
            status, rows, _ = await self.list_objects(
                account, container, prefix=prefix, marker=marker, limit="10000"
            )
            if status >= 300 or not rows:
                return
            for row in rows:
                yield row
            marker = rows[-1]["name"]

    # -- objects --------------------------------------------------------------------------

    async def put_object(
        self,
        account: str,
        container: str,
        obj: str,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        *,
        timestamp: str | None = None,
    ) -> tuple[int, dict[str, str]]:
        """Stream an object to its replicas; (status, headers) with the ETag on success."""
        ring = self.rings.object
        part = ring.get_part(account, container, obj)
        container_part, container_nodes = self.rings.container.get_nodes(account, container)
        timestamp = timestamp or timestamps.now()
        targets = []
        for index in range(ring.replicas):
            node = container_nodes[index % len(container_nodes)]
            targets.append(
                {
                    **headers,
                    "x-timestamp": timestamp,
                    "x-container-host": node.address,
                    "x-container-device": node.device,
                    "x-container-partition": str(container_part),
                }
            )
        try:
            responses = await self.replicas.upload(
                ring, part, (account, container, obj), targets, body
            )
        except UploadFailed as exc:
            return exc.status, {}
        statuses = [r.status for r in responses]
        status = best_status(statuses, ring.replicas)
        out: dict[str, str] = {}
        if 200 <= status < 300:
            etags = {r.headers.get("etag") for r in responses if r.ok}
            if len(etags) > 1:
                return 503, {}
            out["etag"] = etags.pop() or ""
            out["x-timestamp"] = timestamp
        return status, out

    async def get_object(
        self,
        account: str,
        container: str,
        obj: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> ObjectResponse:
        """Read an object (a single byte range when ``headers`` has one), failing over."""
        ring = self.rings.object
        part = ring.get_part(account, container, obj)
        path = (account, container, obj)
        sent = headers or {}
        response, rest = await self.replicas.read(
            ring, part, method, path, sent, accept=lambda r: r.ok or r.status == 416
        )
        if not response.ok or method == "HEAD":
            await response.close()
            return ObjectResponse(response.status, response.headers)
        start, end = 0, int(response.headers.get("content-length", "0"))
        content_range = response.headers.get("content-range")
        if content_range:
            first, _, last = content_range.split()[1].split("/")[0].partition("-")
            start, end = int(first), int(last) + 1
        body = self.replicas.resuming_body(response, rest, part, path, start, end)
        return ObjectResponse(response.status, response.headers, body, response)

    async def write_object(
        self,
        method: str,
        account: str,
        container: str,
        obj: str,
        headers: dict[str, str],
        *,
        timestamp: str | None = None,
    ) -> int:
        """POST (metadata) or DELETE an object on its replicas."""
        ring = self.rings.object
        part = ring.get_part(account, container, obj)
        container_part, container_nodes = self.rings.container.get_nodes(account, container)
        timestamp = timestamp or timestamps.now()

        def headers_for(index: int) -> dict[str, str]:
            node = container_nodes[index % len(container_nodes)]
            return {
                **headers,
                "x-timestamp": timestamp,
                "x-container-host": node.address,
                "x-container-device": node.device,
                "x-container-partition": str(container_part),
            }

        status, _ = await self.replicas.write(
            ring, part, method, (account, container, obj), headers_for
        )
        return status
