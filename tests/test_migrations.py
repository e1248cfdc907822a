"""Migrations: upgrade to head on an empty database gives exactly the models' schema; every
revision downgrades; upgrading again works."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy import text as text_sql

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


def test_0007_fills_in_the_size_of_texts_uploaded_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sizes.db'}"
    migrate.upgrade(url, "0006")
    text = tmp_path / "input.txt"
    text.write_bytes(b"the cat\n" * 100)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for scoring_id, source, path in (
                ("scr_upload", "upload", text),
                ("scr_gone", "upload", tmp_path / "deleted.txt"),
                ("scr_split", "dataset", text),
            ):
                connection.execute(
                    text_sql(
                        "INSERT INTO scorings (id, status, model, checkpoint_id, checkpoint_path, source, input_path,"
                        " options, total_lines, lines_done, bytes_done, sums, attempt, max_attempts, created_at,"
                        " updated_at) VALUES (:id, 'succeeded', 'm', 'ckpt', 'c.pt', :source, :path, '{}', 100, 100,"
                        " 0, '{}', 1, 3, '2026-11-27 00:00:00', '2026-11-27 00:00:00')"
                    ),
                    {"id": scoring_id, "source": source, "path": str(path)},
                )
        migrate.upgrade(url)
        with engine.connect() as connection:
            sizes = dict(connection.execute(text_sql("SELECT id, input_bytes FROM scorings")).all())
        assert sizes == {"scr_upload": 800, "scr_gone": 0, "scr_split": 0}
    finally:
        engine.dispose()
