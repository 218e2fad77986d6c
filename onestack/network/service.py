"""The network service of one process: database, IPAM, quotas, policy, data-plane driver."""

from __future__ import annotations

import socket
from pathlib import Path

from onestack.core.auth.policy import PolicyEngine
from onestack.core.config import Settings
from onestack.core.db import Database
from onestack.core.heartbeat import PeriodicTask, ServiceRegistry
from onestack.core.quota import QuotaEngine
from onestack.network.drivers.base import NetworkDriver
from onestack.network.drivers.noop import NoopDriver
from onestack.network.models import QUOTA_TABLES, SERVICE_TABLES
from onestack.network.policies import RULES

MIGRATIONS = Path(__file__).parent / "migrations"
AGENT_BINARY = "onestack-network-agent"
HEARTBEAT = 10.0
QUOTA_DEFAULTS = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
}


class NetworkService:
    """Everything the network API handlers need, built once per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings.database_url("network"), MIGRATIONS)
        self.quotas = QuotaEngine(self.db, QUOTA_TABLES, QUOTA_DEFAULTS)
        self.driver: NetworkDriver = NoopDriver()
        self.host = socket.gethostname()
        self.agents = ServiceRegistry(self.db, SERVICE_TABLES, down_after=HEARTBEAT * 3)
        self._heartbeat = PeriodicTask("network-agent-heartbeat", HEARTBEAT, self._beat)
        self.policy = PolicyEngine(
            RULES,
            overrides=settings.policy.overrides,
            policy_file=settings.data_dir / "network-policy.yaml",
            enforce_scope=settings.policy.enforce_scope,
        )

    async def start(self) -> None:
        """Migrate, and start this host's agent heartbeat (agents show up in /v2.0/agents)."""
        await self.db.sync_schema()
        await self._beat()
        self._heartbeat.start()

    async def _beat(self) -> None:
        await self.agents.record(self.host, AGENT_BINARY, topic="network.agent")

    async def stop(self) -> None:
        await self._heartbeat.stop()
        await self.db.close()
