"""Migrations: upgrade to head on an empty database gives exactly the models' schema; every
revision downgrades; upgrading again works."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from app.store import migrate
from app.store.db import make_engine
from app.store.tables import Base


def schema_diff(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def test_upgrade_to_head_on_an_empty_database_equals_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        assert schema_diff(engine) == []
        assert migrate.schema_is_current(engine)
        assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
        assert inspect(engine).get_columns("jobs")  # the app never created anything itself
    finally:
        engine.dispose()


def test_every_revision_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        revisions = list(ScriptDirectory.from_config(migrate.alembic_config(url)).walk_revisions())
        for revision in revisions:  # newest first
            assert migrate.current_revisions(engine) == {revision.revision}
            migrate.downgrade(url, "-1")
        assert migrate.current_revisions(engine) == frozenset()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(url)
        assert schema_diff(engine) == [] and migrate.schema_is_current(engine)
    finally:
        engine.dispose()
