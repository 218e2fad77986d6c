"""unique network segment

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # A unique index rather than a constraint: SQLite adds it without rebuilding the table
    # (a rebuild would drop the network table, cascading to its subnets and ports).
    op.create_index(
        "uq_network_segment", "network", ["network_type", "segmentation_id"], unique=True
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("uq_network_segment", table_name="network")
