"""scoring sizes and indexes: an uploaded text's bytes count against its key's storage quota, and
the scorings table gets the indexes the jobs table has (keyset pages, queue order, expired leases,
a key's rows)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op


revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scorings") as batch:
        batch.add_column(sa.Column("input_bytes", sa.BigInteger(), server_default="0", nullable=False))
    # Texts uploaded before this revision: their size from the file, where it is still on disk.
    scorings = sa.table(
        "scorings",
        sa.column("id", sa.String),
        sa.column("source", sa.String),
        sa.column("input_path", sa.Text),
        sa.column("input_bytes", sa.BigInteger),
    )
    bind = op.get_bind()
    uploads = bind.execute(sa.select(scorings.c.id, scorings.c.input_path).where(scorings.c.source == "upload"))
    for scoring_id, input_path in uploads.all():
        path = Path(input_path)
        if path.is_file():
            size = path.stat().st_size
            bind.execute(scorings.update().where(scorings.c.id == scoring_id).values(input_bytes=size))
    op.drop_index("ix_scorings_status_created", table_name="scorings")
    op.create_index("ix_scorings_created_id", "scorings", ["created_at", "id"])
    op.create_index("ix_scorings_status_created_id", "scorings", ["status", "created_at", "id"])
    op.create_index("ix_scorings_status_lease", "scorings", ["status", "lease_expires_at"])
    op.create_index("ix_scorings_owner_created", "scorings", ["owner_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_scorings_owner_created", table_name="scorings")
    op.drop_index("ix_scorings_status_lease", table_name="scorings")
    op.drop_index("ix_scorings_status_created_id", table_name="scorings")
    op.drop_index("ix_scorings_created_id", table_name="scorings")
    op.create_index("ix_scorings_status_created", "scorings", ["status", "created_at"])
    with op.batch_alter_table("scorings") as batch:
        batch.drop_column("input_bytes")
