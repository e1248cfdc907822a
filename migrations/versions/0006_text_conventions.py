"""text conventions, vocabularies and scoring jobs: a dataset's tokenization convention, a job's
vocabulary, and the scorings table (whole texts scored line by line in the background)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing rows: whitespace text ("plain") until registered again with a convention.
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('convention', sa.String(length=20), server_default='plain', nullable=False))
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('vocabulary', sa.JSON(), nullable=True))
    op.create_table('scorings',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('owner_id', sa.String(length=40), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('checkpoint_id', sa.String(length=40), nullable=False),
    sa.Column('checkpoint_path', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('dataset_id', sa.String(length=40), nullable=True),
    sa.Column('split', sa.String(length=10), nullable=True),
    sa.Column('input_path', sa.Text(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('total_lines', sa.Integer(), nullable=False),
    sa.Column('lines_done', sa.Integer(), nullable=False),
    sa.Column('bytes_done', sa.BigInteger(), nullable=False),
    sa.Column('sums', sa.JSON(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_scorings_status_created', 'scorings', ['status', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_scorings_status_created', table_name='scorings')
    op.drop_table('scorings')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('vocabulary')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('convention')
