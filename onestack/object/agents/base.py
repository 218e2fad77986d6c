"""What every storage-node agent shares: its node's devices, and running one pass at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from onestack.object.cluster import Cluster
from onestack.object.ring import Device, Ring
from onestack.object.storage.node import StorageNode

log = logging.getLogger(__name__)


class Agent:
    """One background job of a storage node; :meth:`run_once` is one full pass."""

    name = "agent"

    def __init__(self, cluster: Cluster, node: StorageNode, address: str):
        self.cluster = cluster
        self.node = node
        self.address = address
        self.passes = 0

    def local_devices(self, ring: Ring) -> list[Device]:
        """This node's devices in ``ring`` whose directories exist."""
        return [
            d
            for d in ring.local_devices({self.address})
            if (self.node.devices_dir / d.device).is_dir()
        ]

    def device_names(self) -> Iterator[str]:
        """Every device directory of this node in any ring, once."""
        seen: set[str] = set()
        for kind in ("object", "container", "account"):
            for dev in self.local_devices(self.cluster.rings[kind]):
                if dev.device not in seen:
                    seen.add(dev.device)
                    yield dev.device

    async def run_once(self) -> dict[str, int]:
        """One pass; returns counters for logs and tests."""
        raise NotImplementedError

    async def __call__(self) -> None:
        stats = await self.run_once()
        self.passes += 1
        if any(stats.values()):
            log.info("%s pass %d: %s", self.name, self.passes, stats)
