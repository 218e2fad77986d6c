"""The network service of one process: database, IPAM, quotas, policy, data-plane driver."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

from onestack.core.asgi.errors import APIError
from onestack.core.auth.policy import PolicyEngine
from onestack.core.bus.base import Bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.db import Database
from onestack.core.heartbeat import PeriodicTask, ServiceRegistry
from onestack.core.quota import QuotaEngine
from onestack.network.drivers import make_driver
from onestack.network.drivers.base import NetworkDriver
from onestack.network.drivers.linuxbridge import LinuxBridgeDriver
from onestack.network.models import QUOTA_TABLES, SERVICE_TABLES
from onestack.network.policies import RULES
from onestack.network.topology import AGENTS

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
AGENT_BINARY = "onestack-network-agent"
HEARTBEAT = 10.0
# What of an agent's heartbeat decides where the data plane puts things.
PLACEMENT_KEYS = ("tunneling_ip", "guest_hosts")
QUOTA_DEFAULTS = {
    "network": 100,
    "subnet": 100,
    "subnetpool": -1,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
}


class NetworkService:
    """Everything the network API handlers need, built once per process."""

    def __init__(
        self, settings: Settings, bus: Bus | None = None, client: ServiceClient | None = None
    ):
        self.settings = settings
        self.bus = bus
        self.client = client
        self.db = Database(settings.database_url("network"), MIGRATIONS)
        self.quotas = QuotaEngine(self.db, QUOTA_TABLES, QUOTA_DEFAULTS)
        self.driver: NetworkDriver = make_driver(settings)
        if isinstance(self.driver, LinuxBridgeDriver):
            self.driver.agent_hosts = self.agent_hosts
        # What each host's agent detected, from its latest heartbeat.
        self.agent_configurations: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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
        if self.driver.name == "noop":
            # No agent runs for noop: the service itself stands in as this host's agent.
            await self._beat()
            self._heartbeat.start()

    async def _beat(self) -> None:
        await self.agents.record(self.host, AGENT_BINARY, topic="network.agent")

    async def agent_hosts(self) -> set[str]:
        """Hosts with a network agent (alive or not: a restarting agent still wires its host),
        and the other compute hosts whose guests an agent says it wires."""
        hosts = {record.host for record in await self.agents.list(binary=AGENT_BINARY)}
        for configurations in self.agent_configurations.values():
            hosts.update(configurations.get("guest_hosts") or [])
        return hosts

    async def record_agent(self, host: str, configurations: dict[str, Any]) -> None:
        """A heartbeat of ``host``'s agent."""
        before = self.agent_configurations.get(host, {})
        self.agent_configurations[host] = configurations
        if any(configurations.get(key) != before.get(key) for key in PLACEMENT_KEYS):
            # A new or moved tunnel endpoint, or guests wired elsewhere: every agent's VXLAN
            # peers and floating IPs may change.
            self.changed()
        await self.agents.record(host, AGENT_BINARY, topic=f"network-agent.{host}")

    def changed(self) -> None:
        """The API changed something: every agent re-reads the desired state."""
        if self.bus is None or self.driver.name == "noop":
            return
        self._spawn(self.bus.fanout(AGENTS, "sync"))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def notify_compute(self, events: list[dict[str, Any]]) -> None:
        """Post external events (network-vif-plugged ...) to compute, when there is one."""
        if self.client is None:
            return
        try:
            response = await self.client.request(
                "compute", "POST", "/os-server-external-events", json={"events": events}
            )
        except APIError as exc:
            log.info("no compute service to tell %s: %s", [e["name"] for e in events], exc)
            return
        except Exception as exc:
            log.warning("compute did not take events %s: %s", events, exc)
            return
        if response.status_code >= 400 and response.status_code != 404:
            log.warning("compute answered %s to events: %s", response.status_code, response.text)

    async def stop(self) -> None:
        await self._heartbeat.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.db.close()
