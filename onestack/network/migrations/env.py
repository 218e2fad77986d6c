"""Alembic environment of the network database (used only to author revisions)."""

from onestack.core.db import run_alembic_env
from onestack.network.models import Base

run_alembic_env(Base.metadata)
