"""Alembic environment of the image database (used only to author revisions)."""

from onestack.core.db import run_alembic_env
from onestack.image.models import Base

run_alembic_env(Base.metadata)
