"""Alembic environment of the volume database (used only to author revisions)."""

from onestack.core.db import run_alembic_env
from onestack.volume.models import Base

run_alembic_env(Base.metadata)
