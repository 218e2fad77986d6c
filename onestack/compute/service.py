"""The compute service of one process: database, quotas, policy, service records, bus."""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

from sqlalchemy import select

from onestack.compute.models import QUOTA_TABLES, SERVICE_TABLES, Flavor
from onestack.compute.policies import RULES
from onestack.compute.rpc import AgentClient, ConductorClient
from onestack.core.auth.policy import PolicyEngine
from onestack.core.bus.base import Bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.db import Database
from onestack.core.heartbeat import ServiceRegistry
from onestack.core.quota import QuotaEngine

MIGRATIONS = Path(__file__).parent / "migrations"

# The flavors a fresh cloud starts with (the seed's ``flavor list``): id, name, RAM MB,
# disk GB, vCPUs.
DEFAULT_FLAVORS = (
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 20, 1),
    ("3", "m1.medium", 4096, 40, 2),
    ("4", "m1.large", 8192, 80, 4),
    ("5", "m1.xlarge", 16384, 160, 8),
)


def quota_defaults(settings: Settings) -> dict[str, int]:
    """The configured limits every project starts with."""
    config = settings.compute
    return {
        "instances": config.quota_instances,
        "cores": config.quota_cores,
        "ram": config.quota_ram,
        "key_pairs": config.quota_key_pairs,
        "server_groups": config.quota_server_groups,
        "server_group_members": config.quota_server_group_members,
        "metadata_items": config.quota_metadata_items,
    }


class ConsoleTokens:
    """Short-lived tokens of remote console URLs: token → (server, VNC host, VNC port)."""

    TTL = 600.0

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, str, int, float]] = {}

    def issue(self, server_uuid: str, host: str, port: int) -> str:
        """A new token for the server's console at ``host:port``."""
        now = time.monotonic()
        self._tokens = {k: v for k, v in self._tokens.items() if v[3] > now}
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (server_uuid, host, port, now + self.TTL)
        return token

    def resolve(self, token: str) -> tuple[str, str, int] | None:
        """(server uuid, host, port) of a valid token, else None."""
        found = self._tokens.get(token)
        if found is None or found[3] <= time.monotonic():
            return None
        return found[0], found[1], found[2]


class ComputeService:
    """Everything the compute handlers, the conductor and the scheduler share."""

    def __init__(self, settings: Settings, bus: Bus, client: ServiceClient):
        self.settings = settings
        self.config = settings.compute
        self.bus = bus
        self.client = client
        self.host = self.config.host or socket.gethostname()
        self.db = Database(settings.database_url("compute"), MIGRATIONS)
        self.quotas = QuotaEngine(self.db, QUOTA_TABLES, quota_defaults(settings))
        self.services = ServiceRegistry(
            self.db, SERVICE_TABLES, down_after=self.config.report_interval * 3
        )
        self.agents = AgentClient(bus)
        self.conductor = ConductorClient(bus)
        self.consoles = ConsoleTokens()
        self.policy = PolicyEngine(
            RULES,
            overrides=settings.policy.overrides,
            policy_file=settings.data_dir / "compute-policy.yaml",
            enforce_scope=settings.policy.enforce_scope,
        )

    async def start(self) -> None:
        """Migrate the database and create the default flavors on first start."""
        await self.db.sync_schema()
        await self._default_flavors()

    async def stop(self) -> None:
        await self.db.close()

    async def _default_flavors(self) -> None:
        async with self.db.session() as session:
            if (await session.execute(select(Flavor.id).limit(1))).first() is not None:
                return
            for flavorid, name, ram, disk, vcpus in DEFAULT_FLAVORS:
                session.add(
                    Flavor(flavorid=flavorid, name=name, memory_mb=ram, root_gb=disk, vcpus=vcpus)
                )
