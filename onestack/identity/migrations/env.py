"""Alembic environment of the identity database (used only to author revisions)."""

from onestack.core.db import run_alembic_env
from onestack.identity.models import Base

run_alembic_env(Base.metadata)
