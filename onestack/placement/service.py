"""The placement service of one process: database, policy, and the name tables."""

from __future__ import annotations

from pathlib import Path

import os_resource_classes
import os_traits

from onestack.core.asgi.microversion import MicroversionPolicy, Version
from onestack.core.auth.policy import PolicyEngine
from onestack.core.config import Settings
from onestack.core.db import Database
from onestack.placement.models import ResourceClass, Trait
from onestack.placement.names import NameTable
from onestack.placement.policies import RULES

MIGRATIONS = Path(__file__).parent / "migrations"
VERSIONS = MicroversionPolicy("placement", Version(1, 0), Version(1, 39))


class PlacementService:
    """Everything the placement API handlers need, built once per process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings.database_url("placement"), MIGRATIONS)
        self.resource_classes = NameTable(
            self.db, ResourceClass, list(os_resource_classes.STANDARDS)
        )
        self.traits = NameTable(self.db, Trait, list(os_traits.get_traits()))
        self.policy = PolicyEngine(
            RULES,
            overrides=settings.policy.overrides,
            policy_file=settings.data_dir / "placement-policy.yaml",
            enforce_scope=settings.policy.enforce_scope,
        )

    async def start(self) -> None:
        """Migrate, and make sure every standard resource class and trait exists."""
        await self.db.sync_schema()
        await self.resource_classes.sync_standard()
        await self.traits.sync_standard()

    async def stop(self) -> None:
        await self.db.close()
