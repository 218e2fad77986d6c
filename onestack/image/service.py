"""The image service of one process: database, stores, quotas, policy, staging area."""

from __future__ import annotations

import asyncio
from pathlib import Path

from onestack.core.auth.policy import PolicyEngine
from onestack.core.config import Settings
from onestack.core.db import Database
from onestack.core.limits import UnifiedLimits
from onestack.core.quota import QuotaEngine
from onestack.image.models import QUOTA_TABLES
from onestack.image.policies import RULES
from onestack.image.stores.base import Store
from onestack.image.stores.file import FileStore

MIGRATIONS = Path(__file__).parent / "migrations"
MIB = 1 << 20


class ImageService:
    """Everything the image API handlers need, built once per process."""

    def __init__(self, settings: Settings, limits: UnifiedLimits | None = None):
        self.settings = settings
        config = settings.image
        self.db = Database(settings.database_url("image"), MIGRATIONS)
        images_dir = (
            Path(config.file_store_dir) if config.file_store_dir else settings.data_dir / "images"
        )
        self.stores: dict[str, Store] = {"file": FileStore(images_dir)}
        self.default_store = config.default_store
        if self.default_store not in self.stores:
            raise ValueError(f"unknown default image store {self.default_store!r}")
        self.staging = settings.data_dir / "image-staging"
        self.background: set[asyncio.Task[None]] = set()
        self.quotas = QuotaEngine(
            self.db,
            QUOTA_TABLES,
            {
                "image_count_total": config.quota_image_count,
                "image_size_total": config.quota_image_size_mib,
                "image_stage_total": config.quota_image_size_mib,
            },
            limit_source=limits.for_project if limits is not None else None,
        )
        self.max_image_size = config.max_image_size
        self.policy = PolicyEngine(
            RULES,
            overrides=settings.policy.overrides,
            policy_file=settings.data_dir / "image-policy.yaml",
            enforce_scope=settings.policy.enforce_scope,
        )

    async def start(self) -> None:
        """Migrate the database and prepare the staging area."""
        await self.db.sync_schema()
        self.staging.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        """Let imports in flight finish their step, then close the database."""
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.db.close()
