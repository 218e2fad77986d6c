"""Alembic environment of the placement database (used only to author revisions)."""

from onestack.core.db import run_alembic_env
from onestack.placement.models import Base

run_alembic_env(Base.metadata)
