"""metric points and browser sessions: one metric point per job, key and step (duplicates removed,
the later point kept, then a unique index), and a `sessions` table for dashboard logins

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Before this revision a training epoch whose last step was one of its ten progress points wrote `lr`
and `wps` twice at that step; the earlier of each pair is deleted. A dashboard session is its own
record: the cookie holds a random id whose sha256 only is stored, with an expiry that slides.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A point with a later one (higher id) at the same job, key and step; seeks the (job_id, key, step, id) index.
DELETE_DUPLICATES = """
DELETE FROM metrics
WHERE EXISTS (
    SELECT 1 FROM metrics AS later
    WHERE later.job_id = metrics.job_id AND later.key = metrics.key AND later.step = metrics.step
      AND later.id > metrics.id
)
"""


def upgrade() -> None:
    op.execute(DELETE_DUPLICATES)
    op.create_index("uq_metrics_job_key_step", "metrics", ["job_id", "key", "step"], unique=True)
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_index("ix_sessions_key_created", "sessions", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_sessions_key_created", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("uq_metrics_job_key_step", table_name="metrics")
