"""The cluster as one process sees it: the rings, the nodes served here, and how to reach others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from onestack.object.ring import Device, RingSet
from onestack.object.storage.backend import Backend, LocalBackend, RemoteBackend

T = TypeVar("T")


class Cluster:
    """Rings, a disk thread pool, local nodes by address, and an HTTP pool for remote ones."""

    def __init__(
        self,
        rings_dir: Path,
        *,
        secret: str,
        node_timeout: float = 10.0,
        disk_threads: int = 24,
    ):
        self.rings = RingSet(rings_dir)
        self.secret = secret
        self.node_timeout = node_timeout
        self.local: dict[str, Backend] = {}
        self.executor = ThreadPoolExecutor(disk_threads, thread_name_prefix="object-disk")
        self._http: httpx.AsyncClient | None = None
        self._remote: dict[str, RemoteBackend] = {}

    def add_local(self, address: str, node: Any) -> None:
        """Serve ``address``'s devices in this process (no socket between proxy and node)."""
        self.local[address] = LocalBackend(node)

    def backend(self, dev: Device | str) -> Backend:
        address = dev if isinstance(dev, str) else dev.address
        local = self.local.get(address)
        if local is not None:
            return local
        remote = self._remote.get(address)
        if remote is None:
            if self._http is None:
                limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
                self._http = httpx.AsyncClient(limits=limits, timeout=self.node_timeout)
            remote = RemoteBackend(self._http, address, self.secret, self.node_timeout)
            self._remote[address] = remote
        return remote

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work on the disk thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self.executor.shutdown(wait=False, cancel_futures=True)
