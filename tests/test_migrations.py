"""Migrations: upgrade to head on an empty database gives exactly the models' schema; every
revision downgrades; upgrading again works."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from harness import POSTGRES_URL, postgres_schema
from sqlalchemy import Engine, inspect
from sqlalchemy import text as text_sql
from sqlalchemy.exc import IntegrityError, OperationalError

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema on the PostgreSQL server (skipped without one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dups.db'}"
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_schema())
        except OperationalError as exc:
            pytest.skip(f"no PostgreSQL server at {POSTGRES_URL}: {type(exc).__name__}")
        yield url


def test_0008_removes_duplicate_metric_points_keeping_the_later_one(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0007")
    engine = make_engine(empty_url)
    # What the old worker wrote when an epoch's last step was a progress point: lr and wps twice at
    # steps 19 and 38 (the progress point first, the epoch's summary after it).
    points = [
        ("train_ppl_running", 500.0, 10, 1),
        ("wps", 100.0, 19, 1),
        ("lr", 1.0, 19, 1),
        ("train_ppl_running", 400.0, 19, 1),
        ("train_ppl", 410.0, 19, 1),
        ("valid_ppl", 420.0, 19, 1),
        ("lr", 1.0, 19, 1),
        ("wps", 101.0, 19, 1),
        ("wps", 200.0, 38, 2),
        ("lr", 0.5, 38, 2),
        ("valid_ppl", 300.0, 38, 2),
        ("lr", 0.5, 38, 2),
        ("wps", 202.0, 38, 2),
    ]
    try:
        with engine.begin() as connection:
            connection.execute(
                text_sql(
                    "INSERT INTO datasets (id, name, source, path, train_tokens, valid_tokens, test_tokens, vocab_size,"
                    " size_bytes, created_at, convention) VALUES ('ds_m', 'm', 'upload', '/x', 1, 1, 1, 2, 1,"
                    " '2026-11-27 00:00:00', 'plain')"
                )
            )
            for job_id in ("job_a", "job_b"):
                connection.execute(
                    text_sql(
                        "INSERT INTO jobs (id, status, preset, overrides, config, dataset_id, attempt, max_attempts,"
                        " progress, requirements, created_at, updated_at) VALUES (:id, 'succeeded', 'test', '{}',"
                        " '{}', 'ds_m', 1, 3, '{}', '[]', '2026-11-27 00:00:00', '2026-11-27 00:00:00')"
                    ),
                    {"id": job_id},
                )
                for key, value, step, epoch in points:
                    connection.execute(
                        text_sql(
                            "INSERT INTO metrics (job_id, key, value, step, epoch, timestamp, attempt)"
                            " VALUES (:job, :key, :value, :step, :epoch, 0, 1)"
                        ),
                        {"job": job_id, "key": key, "value": value, "step": step, "epoch": epoch},
                    )
        with engine.connect() as connection:
            before = connection.execute(
                text_sql("SELECT COUNT(*) FROM metrics GROUP BY job_id, key, step HAVING COUNT(*) > 1")
            ).all()
        assert len(before) == 8  # (wps, 19) (lr, 19) (wps, 38) (lr, 38) of each job

        migrate.upgrade(empty_url)
        with engine.connect() as connection:
            after = connection.execute(
                text_sql("SELECT job_id, key, step, value FROM metrics ORDER BY job_id, key, step")
            ).all()
        kept = {(job, key, step): value for job, key, step, value in after}
        assert len(after) == len(kept) == 2 * 9  # one point per job, key and step; nothing else removed
        for job_id in ("job_a", "job_b"):
            assert kept[(job_id, "wps", 19)] == 101.0 and kept[(job_id, "wps", 38)] == 202.0  # the later point
            assert kept[(job_id, "train_ppl_running", 10)] == 500.0 and kept[(job_id, "valid_ppl", 38)] == 300.0
        with pytest.raises(IntegrityError), engine.begin() as connection:  # the store refuses a second point
            connection.execute(
                text_sql(
                    "INSERT INTO metrics (job_id, key, value, step, epoch, timestamp, attempt)"
                    " VALUES ('job_a', 'lr', 1.0, 19, 1, 0, 2)"
                )
            )
        with engine.begin() as connection:  # another step, key or job is fine
            connection.execute(
                text_sql(
                    "INSERT INTO metrics (job_id, key, value, step, epoch, timestamp, attempt)"
                    " VALUES ('job_a', 'lr', 1.0, 20, 1, 0, 2)"
                )
            )
        migrate.downgrade(empty_url, "0007")
        migrate.upgrade(empty_url)
        assert schema_diff(engine) == []
    finally:
        engine.dispose()
