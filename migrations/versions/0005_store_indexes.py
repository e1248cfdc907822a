"""store indexes: keyset pages, queue order, expired leases, metric pages and downsampling

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_datasets_created_id", "datasets", ["created_at", "id"])
    op.drop_index("ix_jobs_status_created", table_name="jobs")
    op.create_index("ix_jobs_created_id", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_status_created_id", "jobs", ["status", "created_at", "id"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_expires_at"])
    op.create_index("ix_metrics_job_id", "metrics", ["job_id", "id"])
    op.create_index("ix_metrics_job_key_step", "metrics", ["job_id", "key", "step", "id"])


def downgrade() -> None:
    op.drop_index("ix_metrics_job_key_step", table_name="metrics")
    op.drop_index("ix_metrics_job_id", table_name="metrics")
    op.drop_index("ix_jobs_status_lease", table_name="jobs")
    op.drop_index("ix_jobs_status_created_id", table_name="jobs")
    op.drop_index("ix_jobs_created_id", table_name="jobs")
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.drop_index("ix_datasets_created_id", table_name="datasets")
