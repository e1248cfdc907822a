"""scoring upload sizes: an uploaded text's bytes count against its key's storage quota

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Scorings stored before this revision count their results only.
    with op.batch_alter_table("scorings") as batch:
        batch.add_column(sa.Column("input_bytes", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("scorings") as batch:
        batch.drop_column("input_bytes")
