"""a scoring's status note: a planned hand-back (a worker stopping) and the line it resumes at, kept
apart from `error`

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

Scorings handed back before this revision keep their "handed back at line N" in `error`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("scorings", sa.Column("status_note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("scorings", "status_note")  # SQLite 3.35 and later drop a column in place
