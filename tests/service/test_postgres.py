"""The same code on PostgreSQL: migrations, concurrent claims that never win a job twice, lease
expiry and the downsampled metric query. Each test runs in its own schema; skipped without a server
($TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from harness import POSTGRES_URL, postgres_schema, race_claims
from sqlalchemy import Engine, insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.store import migrate
from app.store.db import make_engine
from app.store.tables import Base, Dataset, Job, Metric, new_id
from app.training import metrics
from app.training.queue import claim_next, requeue_expired

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema, migrated to head; the schema is dropped afterwards."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_schema())
        except OperationalError as exc:
            pytest.skip(f"no PostgreSQL server at {POSTGRES_URL}: {type(exc).__name__}")
        migrate.upgrade(url)
        yield url


@pytest.fixture
def pg(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url, pool_size=10)
    yield engine
    engine.dispose()


def add_jobs(engine: Engine, count: int) -> list[str]:
    ids = [new_id("job") for _ in range(count)]
    with Session(engine) as session, session.begin():
        session.add(
            Dataset(
                id="ds_pg",
                name="pg",
                source="upload",
                path="/nowhere",
                train_tokens=1,
                valid_tokens=1,
                test_tokens=1,
                vocab_size=2,
                size_bytes=1,
            )
        )
        session.flush()
        for job_id in ids:
            session.add(Job(id=job_id, status="queued", preset="test", config={}, dataset_id="ds_pg", max_attempts=2))
    return ids


def test_migrations_match_the_models_on_postgres(pg: Engine, pg_url: str) -> None:
    with pg.connect() as connection:
        assert list(compare_metadata(MigrationContext.configure(connection), Base.metadata)) == []
    assert migrate.schema_is_current(pg)
    migrate.downgrade(pg_url, "base")
    assert migrate.current_revisions(pg) == frozenset()
    migrate.upgrade(pg_url)
    assert migrate.schema_is_current(pg)


def test_concurrent_claims_never_win_a_job_twice(pg: Engine) -> None:
    jobs = add_jobs(pg, 40)
    won = race_claims(pg, 8)
    assert sorted(won) == sorted(jobs)
    with Session(pg) as session:
        rows = session.query(Job.status, Job.attempt).all()
    assert {(r.status, r.attempt) for r in rows} == {("running", 1)}


def test_expired_leases_requeue_then_fail_on_postgres(pg: Engine) -> None:
    (job_id,) = add_jobs(pg, 1)
    for attempt in (1, 2):
        claimed = claim_next(pg, f"ghost-{attempt}", lease_seconds=-1)  # expired at once
        assert claimed is not None and claimed.attempt == attempt
        assert requeue_expired(pg) == 1
    with Session(pg) as session:
        job = session.get_one(Job, job_id)
        assert job.status == "failed"
        assert job.error == "worker lost (lease expired) on attempt 2 of 2; no attempts left"


def test_downsampled_metrics_on_postgres(pg: Engine) -> None:
    (job_id,) = add_jobs(pg, 1)
    with Session(pg) as session, session.begin():
        session.execute(
            insert(Metric),
            [
                {"job_id": job_id, "key": k, "value": float(i), "step": i, "epoch": 1, "timestamp": i, "attempt": 1}
                for k in ("lr", "wps")
                for i in range(1, 101)
            ],
        )
    with Session(pg) as session:
        points = metrics.downsampled(session, job_id, ["lr"], 10)
    steps = [p.step for p in points]
    assert len(steps) <= 10 and steps[0] == 1 and steps[-1] == 100 and {p.key for p in points} == {"lr"}
