"""A storage node: the account, container and object servers over this node's devices."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from onestack.object.cluster import Cluster
from onestack.object.storage.backend import BackendResponse, error
from onestack.object.storage.databases import BrokerCache

log = logging.getLogger(__name__)
KIND_HEADER = "x-backend-kind"


def http_date(timestamp: str | float) -> str:
    return email.utils.formatdate(float(timestamp), usegmt=True)


class StorageNode:
    """Answers backend requests for the devices under ``devices_dir``."""

    def __init__(self, cluster: Cluster, devices_dir: Path, *, reclaim_age: float = 7 * 86400):
        from onestack.object.storage.db_server import AccountServer, ContainerServer
        from onestack.object.storage.object_server import ObjectServer

        self.cluster = cluster
        self.devices_dir = devices_dir
        self.reclaim_age = reclaim_age
        self.brokers = BrokerCache()
        self.objects = ObjectServer(self)
        self.containers = ContainerServer(self)
        self.accounts = AccountServer(self)

    async def handle(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse:
        account, container, obj = path
        if method == "REPLICATE" and not account:
            return await self.objects.replicate(device, part, headers, body)
        if not account:
            return error(400, "no account in path")
        # Row updates name their server: an object row goes to a container server.
        kind = headers.get(KIND_HEADER) or (
            "object" if obj else "container" if container else "account"
        )
        if kind == "object" and obj:
            return await self.objects.handle(method, device, part, path, headers, body, query)
        if kind == "container" and container:
            return await self.containers.handle(method, device, part, path, headers, body, query)
        if kind == "account":
            return await self.accounts.handle(method, device, part, path, headers, body, query)
        return error(400, f"bad path for {kind} server")

    def close(self) -> None:
        self.brokers.close()
