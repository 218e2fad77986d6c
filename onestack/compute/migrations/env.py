"""Alembic environment of the compute database (used only to author revisions)."""

from onestack.compute.models import Base
from onestack.core.db import run_alembic_env

run_alembic_env(Base.metadata)
