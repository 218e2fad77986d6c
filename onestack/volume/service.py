"""The block storage service of one process: database, quotas, policy, service records, bus."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

from sqlalchemy import select

from onestack.core.auth.policy import PolicyEngine
from onestack.core.bus.base import Bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.db import Database, utcnow
from onestack.core.heartbeat import ServiceRegistry
from onestack.core.quota import QuotaEngine
from onestack.volume.models import QUOTA_TABLES, SERVICE_TABLES, Message, QuotaClass
from onestack.volume.policies import RULES
from onestack.volume.rpc import AgentClient, SchedulerClient

MIGRATIONS = Path(__file__).parent / "migrations"
# Resources Cinder counts per volume type as ``<resource>_<type name>``.
PER_TYPE = ("volumes", "gigabytes", "snapshots")
MESSAGE_TTL = dt.timedelta(days=30)


def quota_defaults(settings: Settings) -> dict[str, int]:
    """The configured limits every project starts with."""
    config = settings.volume
    return {
        "volumes": config.quota_volumes,
        "gigabytes": config.quota_gigabytes,
        "snapshots": config.quota_snapshots,
        "backups": config.quota_backups,
        "backup_gigabytes": config.quota_backup_gigabytes,
        "groups": config.quota_groups,
        "per_volume_gigabytes": config.quota_per_volume_gigabytes,
    }


class VolumeService:
    """Everything the block storage handlers, scheduler and report handler share."""

    def __init__(self, settings: Settings, bus: Bus, client: ServiceClient):
        self.settings = settings
        self.config = settings.volume
        self.bus = bus
        self.client = client
        self.host = self.config.host or socket.gethostname()
        self.db = Database(settings.database_url("volume"), MIGRATIONS)
        self.configured_quotas = quota_defaults(settings)
        self.quotas = QuotaEngine(self.db, QUOTA_TABLES, dict(self.configured_quotas))
        self.services = ServiceRegistry(
            self.db, SERVICE_TABLES, down_after=self.config.report_interval * 3
        )
        self.agents = AgentClient(bus)
        self.scheduler = SchedulerClient(bus)
        self.policy = PolicyEngine(
            RULES,
            overrides=settings.policy.overrides,
            policy_file=settings.data_dir / "volume-policy.yaml",
            enforce_scope=settings.policy.enforce_scope,
        )

    async def start(self) -> None:
        """Migrate the database."""
        await self.db.sync_schema()

    async def stop(self) -> None:
        await self.db.close()

    async def refresh_quota_defaults(self, type_names: list[str] | tuple[str, ...] = ()) -> None:
        """Defaults = configuration, overridden by the ``default`` quota class; per-type
        resources of ``type_names`` are unlimited unless set."""
        async with self.db.session() as session:
            rows = (
                await session.execute(select(QuotaClass).where(QuotaClass.class_name == "default"))
            ).scalars()
            classes = {row.resource: row.hard_limit for row in rows}
        defaults = {**self.configured_quotas}
        for name in type_names:
            for resource in PER_TYPE:
                defaults[f"{resource}_{name}"] = -1
        for resource in list(self.quotas.defaults):
            if resource not in defaults:
                defaults[resource] = self.quotas.defaults[resource]
        defaults.update(classes)
        self.quotas.defaults = defaults

    async def add_message(
        self,
        project_id: str,
        resource_type: str,
        resource_uuid: str | None,
        event_id: str,
        user_message: str,
        request_id: str | None = None,
    ) -> None:
        """Record a user message (``/v3/messages``): why an asynchronous request failed."""
        async with self.db.session() as session:
            session.add(
                Message(
                    project_id=project_id,
                    request_id=request_id,
                    resource_type=resource_type,
                    resource_uuid=resource_uuid,
                    event_id=event_id,
                    user_message=user_message[:255],
                    expires_at=utcnow() + MESSAGE_TTL,
                )
            )
