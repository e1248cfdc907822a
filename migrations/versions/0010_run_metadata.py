"""run metadata: a name, tags and notes on jobs and scorings (tags also one row each in `job_tags`
and `scoring_tags`, for filtering), a job's status note (a planned hand-back), and the indexes of
the job list's filters and sorts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

Existing rows get no name, no tags and no notes. The best validation and test perplexities the
list sorts by are the jobs' `best_valid_ppl` and `test_ppl`, which workers have recorded with every
epoch and at the end of every run since 0001: nothing to fill in.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild: on SQLite, rebuilding `jobs` would trip the foreign keys
    # of the metrics, logs and checkpoints that name it).
    for table in ("jobs", "scorings"):
        op.add_column(table, sa.Column("name", sa.String(length=200), nullable=True))
        op.add_column(table, sa.Column("tags", sa.JSON(), server_default="[]", nullable=False))
        op.add_column(table, sa.Column("notes", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("status_note", sa.Text(), nullable=True))
    op.create_table(
        "job_tags",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("tag", sa.String(length=50), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "tag"),
    )
    op.create_index("ix_job_tags_tag", "job_tags", ["tag", "job_id"])
    op.create_table(
        "scoring_tags",
        sa.Column("scoring_id", sa.String(length=40), nullable=False),
        sa.Column("tag", sa.String(length=50), nullable=False),
        sa.ForeignKeyConstraint(["scoring_id"], ["scorings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("scoring_id", "tag"),
    )
    op.create_index("ix_scoring_tags_tag", "scoring_tags", ["tag", "scoring_id"])
    op.create_index("ix_jobs_dataset_created_id", "jobs", ["dataset_id", "created_at", "id"])
    op.create_index("ix_jobs_best_valid_id", "jobs", ["best_valid_ppl", "id"])
    op.create_index("ix_jobs_test_ppl_id", "jobs", ["test_ppl", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_test_ppl_id", table_name="jobs")
    op.drop_index("ix_jobs_best_valid_id", table_name="jobs")
    op.drop_index("ix_jobs_dataset_created_id", table_name="jobs")
    op.drop_index("ix_scoring_tags_tag", table_name="scoring_tags")
    op.drop_table("scoring_tags")
    op.drop_index("ix_job_tags_tag", table_name="job_tags")
    op.drop_table("job_tags")
    op.drop_column("jobs", "status_note")
    for table in ("scorings", "jobs"):
        for column in ("notes", "tags", "name"):
            op.drop_column(table, column)  # SQLite 3.35 and later drop a column in place
