"""api keys and owners

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

An `api_keys` table; `owner_id` on datasets, jobs and checkpoints (NULL for rows made before keys
existed: admin keys see them); `deleted_at` on datasets. Columns are added and dropped with plain
ALTER TABLE (SQLite >= 3.35), never by rebuilding a table: rebuilding `jobs` with foreign keys on
would cascade into its metrics and checkpoints.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNED = ("datasets", "jobs", "checkpoints")
INDEXES = (
    ("ix_datasets_owner_created", "datasets", ["owner_id", "created_at"]),
    ("ix_jobs_owner_created", "jobs", ["owner_id", "created_at"]),
    ("ix_checkpoints_owner", "checkpoints", ["owner_id"]),
)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("prefix", sa.String(length=20), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    for table in OWNED:
        op.add_column(table, sa.Column("owner_id", sa.String(length=40), nullable=True))
    op.add_column("datasets", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    op.execute("ALTER TABLE datasets DROP COLUMN deleted_at")
    for table in OWNED:
        op.execute(f"ALTER TABLE {table} DROP COLUMN owner_id")
    op.drop_table("api_keys")
