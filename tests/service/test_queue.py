"""The queue under concurrency: two worker processes on ten jobs, and racing claimers on SQLite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness import Service, race_claims
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables import Metric


def test_two_workers_on_ten_jobs_never_run_a_job_twice(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    jobs = [service.submit(dataset["id"], max_max_epoch=1, max_steps_per_epoch=40, seed=i)["id"] for i in range(10)]
    workers = [service.start_worker("--burst"), service.start_worker("--burst")]
    for worker in workers:
        assert worker.wait(120) == 0, worker.log()

    finished = [service.job(job_id) for job_id in jobs]
    assert [j["status"] for j in finished] == ["succeeded"] * 10
    assert [j["attempt"] for j in finished] == [1] * 10
    claimed_lines = [line for w in workers for line in w.log().splitlines() if "claimed job " in line]
    claims = Counter(line.split("claimed job ")[1].split()[0] for line in claimed_lines)
    assert sorted(claims) == sorted(jobs) and set(claims.values()) == {1}
    with Session(service.engine) as session:
        rows = session.execute(select(Metric.job_id, Metric.key, Metric.step, Metric.attempt)).all()
    epoch_points = Counter((r.job_id, r.key) for r in rows if r.key in ("train_ppl", "valid_ppl", "test_ppl"))
    assert set(epoch_points.values()) == {1} and len(epoch_points) == 30
    assert {r.attempt for r in rows} == {1}


def test_racing_claims_on_sqlite_each_win_a_different_job(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    jobs = {service.submit(dataset["id"])["id"] for _ in range(24)}
    won = race_claims(service.engine, 6)
    assert sorted(won) == sorted(jobs)
    assert {service.job(j)["attempt"] for j in jobs} == {1}
