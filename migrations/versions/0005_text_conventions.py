"""text conventions and vocabularies: a dataset's tokenization convention, a job's vocabulary

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows: whitespace text ("plain") until registered again with a convention.
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('convention', sa.String(length=20), server_default='plain', nullable=False))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('vocabulary', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('vocabulary')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('convention')
