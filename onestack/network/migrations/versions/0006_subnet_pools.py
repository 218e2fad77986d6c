"""subnet pools

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from onestack.core.db import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "subnetpool",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("revision_number", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("prefixes", sa.JSON(), nullable=False),
        sa.Column("default_prefixlen", sa.Integer(), nullable=False),
        sa.Column("min_prefixlen", sa.Integer(), nullable=False),
        sa.Column("max_prefixlen", sa.Integer(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("default_quota", sa.Integer(), nullable=True),
        sa.Column("address_scope_id", sa.String(36), nullable=True),
        sa.Column("hash", sa.String(36), nullable=False),
    )
    op.create_index("ix_subnetpool_name", "subnetpool", ["name"])
    op.create_index("ix_subnetpool_project_id", "subnetpool", ["project_id"])
    # A plain column (no foreign key): SQLite adds it without rebuilding the subnet table;
    # a pool with subnets refuses deletion instead.
    op.add_column("subnet", sa.Column("subnetpool_id", sa.String(36), nullable=True))
    op.create_index("ix_subnet_subnetpool_id", "subnet", ["subnetpool_id"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_subnet_subnetpool_id", table_name="subnet")
    op.drop_column("subnet", "subnetpool_id")
    op.drop_table("subnetpool")
