"""The object service of one process: its cluster view, proxy store, local node and agents."""

from __future__ import annotations

import logging
from pathlib import Path

from onestack.cloud import read_or_create_secret
from onestack.core.config import ObjectSettings, Settings
from onestack.object.api.access import RolePolicy
from onestack.object.cluster import Cluster
from onestack.object.proxy.store import Store
from onestack.object.ring.layout import ensure_default_rings
from onestack.object.storage.node import StorageNode

log = logging.getLogger(__name__)


def rings_dir(settings: Settings) -> Path:
    config = settings.object
    return Path(config.rings_dir) if config.rings_dir else settings.data_dir / "rings"


def devices_dir(settings: Settings) -> Path:
    config = settings.object
    return Path(config.devices_dir) if config.devices_dir else settings.data_dir / "object-devices"


def node_address(settings: Settings) -> str:
    if settings.object.node_address:
        return settings.object.node_address
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"{host}:{settings.port}"


def node_secret(settings: Settings) -> str:
    return settings.object.node_secret or read_or_create_secret(
        settings.data_dir / "object-node-secret"
    )


class ObjectService:
    """Everything the Swift and S3 handlers and the agents need, built once per process."""

    def __init__(self, settings: Settings):
        self.root_settings = settings
        self.settings: ObjectSettings = settings.object
        self.rings_dir = rings_dir(settings)
        self.devices_dir = devices_dir(settings)
        self.address = node_address(settings)
        self.roles = RolePolicy.from_settings(
            self.settings.operator_roles,
            self.settings.reader_roles,
            self.settings.reseller_admin_role,
        )
        self.cluster: Cluster | None = None
        self.node: StorageNode | None = None
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "object service not started"
        return self._store

    def start(self) -> None:
        """Make the default rings if there are none, then load them and the local node."""
        if not (self.rings_dir / "object.ring.gz").exists() or _default_layout(self.rings_dir):
            ip, port = self.address.rsplit(":", 1)
            ensure_default_rings(
                self.rings_dir,
                self.devices_dir,
                ip,
                int(port),
                part_power=self.settings.part_power,
                replicas=self.settings.replicas,
                devices=self.settings.devices,
            )
        self.cluster = Cluster(
            self.rings_dir,
            secret=node_secret(self.root_settings),
            node_timeout=self.settings.node_timeout,
            disk_threads=self.settings.disk_threads,
        )
        if self.settings.serve_node:
            self.node = StorageNode(
                self.cluster, self.devices_dir, reclaim_age=self.settings.reclaim_age
            )
            self.cluster.add_local(self.address, self.node)
        self._store = Store(self.cluster, info_ttl=self.settings.info_ttl)

    async def stop(self) -> None:
        if self.node is not None:
            self.node.close()
        if self.cluster is not None:
            await self.cluster.close()


def _default_layout(directory: Path) -> bool:
    import json

    try:
        return bool(json.loads((directory / "object.builder").read_bytes()).get("default_layout"))
    except (FileNotFoundError, ValueError):
        return False
