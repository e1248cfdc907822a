"""worker capabilities, job requirements and retry backoff

Workers advertise what they can run (`["cpu"]`, `["cpu", "cuda"]`, precisions such as `"bf16"`);
a job lists what it needs and only a worker that has all of it claims it; `estimate` is a
job's estimated step and epoch time at submission. `run_after` holds a job
back after a transient failure (backoff).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('workers') as batch:
        batch.add_column(sa.Column('capabilities', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('requirements', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('run_after', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('estimate', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('estimate')
        batch.drop_column('run_after')
        batch.drop_column('requirements')
    with op.batch_alter_table('workers') as batch:
        batch.drop_column('capabilities')
