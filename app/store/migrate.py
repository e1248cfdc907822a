"""Schema migrations, run programmatically with the configured URL (`python -m app migrate`).

The app never calls `create_all`: `upgrade()` is the explicit step the start command performs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config for `url` without alembic.ini (the URL is escaped for ConfigParser)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` empties it)."""
    command.downgrade(alembic_config(url), revision)


@lru_cache
def head_revisions() -> frozenset[str]:
    """The revisions the migration scripts end at."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the database is at (empty before the first migration)."""
    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())


def schema_is_current(engine: Engine) -> bool:
    """True when the database has been migrated to head."""
    return current_revisions(engine) == head_revisions()
