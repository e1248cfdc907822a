"""The same code on PostgreSQL: migrations, concurrent claims that never win a job twice, lease
expiry and the downsampled metric query. Each test runs in its own schema; skipped without a server
($TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from harness import POSTGRES_URL, TERMINAL, open_service, postgres_schema, race_claims, wait_for, write_corpus
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

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


@pytest.mark.slow
def test_a_job_outlives_every_database_connection_dropped_mid_epoch(tmp_path: Path, pg_url: str) -> None:
    """What a PostgreSQL restart does to its clients: every connection of the API and the worker is
    cut mid-epoch. The job still ends with the numbers of a run nobody disturbed (the worker retries
    its writes or its attempt resumes from the last checkpoint), and the API answers again."""
    name = f"lm_{secrets.token_hex(4)}"  # the connections to cut, by their application name
    service, close = open_service(tmp_path, database_url=f"{pg_url}&application_name={name}_api")
    try:
        dataset = service.upload(write_corpus(tmp_path / "corpus", train=2000, seed=7))
        overrides = {"max_max_epoch": 3, "keep_prob": 1.0}
        calm = service.submit(dataset["id"], **overrides)
        cut = service.submit(dataset["id"], **overrides)
        worker_url = f"{pg_url}&application_name={name}_worker"
        service.start_worker(settings=service.settings.model_copy(update={"database_url": worker_url}))
        calm_done = service.wait_status(calm["id"], TERMINAL, timeout=240)

        def training() -> bool:
            progress = service.job(cut["id"])["progress"] or {}
            return progress.get("epoch", 0) >= 2 and progress.get("phase") == "train"

        wait_for(training, timeout=120, interval=0.05, what="the second job to train its second epoch")
        admin = make_engine(POSTGRES_URL, poolclass=NullPool)
        with admin.begin() as connection:
            killed = dict(
                connection.execute(
                    text(
                        "SELECT application_name, count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name LIKE :name GROUP BY application_name"
                    ),
                    {"name": f"{name}_%"},
                ).all()
            )
        admin.dispose()
        assert killed.get(f"{name}_worker", 0) >= 1 and killed.get(f"{name}_api", 0) >= 1, killed
        cut_done = service.wait_status(cut["id"], TERMINAL, timeout=240)
    finally:
        close()
    assert calm_done["status"] == cut_done["status"] == "succeeded", (calm_done, cut_done)
    assert cut_done["test_ppl"] == calm_done["test_ppl"]
    assert cut_done["best_valid_ppl"] == calm_done["best_valid_ppl"]
