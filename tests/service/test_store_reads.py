"""Store reads through the API on rows written straight to the tables: keyset pages when many rows
share a `created_at`, queue positions computed once per page, metric pages over several keys and
the exact rule of downsampled metrics."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import Service
from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.store.tables import Dataset, Job, Metric
from app.training import jobs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def add_dataset(service: Service, dataset_id: str, created_at: datetime) -> None:
    with Session(service.engine) as session, session.begin():
        session.add(
            Dataset(
                id=dataset_id,
                name=dataset_id,
                source="upload",
                path="/nowhere",
                train_tokens=1,
                valid_tokens=1,
                test_tokens=1,
                vocab_size=2,
                size_bytes=1,
                created_at=created_at,
            )
        )


def add_jobs(service: Service, rows: list[tuple[str, str, datetime]]) -> None:
    """Jobs (id, status, created_at) on one dataset."""
    add_dataset(service, "ds_store", T0)
    with Session(service.engine) as session, session.begin():
        for job_id, status, created_at in rows:
            session.add(
                Job(
                    id=job_id,
                    status=status,
                    preset="test",
                    overrides={},
                    config={},
                    dataset_id="ds_store",
                    max_attempts=3,
                    progress={},
                    created_at=created_at,
                )
            )


def tied_jobs() -> list[tuple[str, str, datetime]]:
    """23 jobs in 5 groups sharing a created_at (ties broken by id), statuses mixed, ids shuffled."""
    rng = random.Random(7)
    ids = [f"job_{i:02d}{rng.randrange(16**6):06x}" for i in range(23)]
    rng.shuffle(ids)
    statuses = ["queued", "succeeded", "queued", "running", "queued", "failed"]
    return [(job_id, statuses[i % len(statuses)], T0 + timedelta(seconds=i % 5)) for i, job_id in enumerate(ids)]


def pages(service: Service, path: str, limit: int, **params: Any) -> list[list[dict[str, Any]]]:
    out, cursor = [], None
    while True:
        query = {"limit": limit, **params} | ({"cursor": cursor} if cursor else {})
        response = service.client.get(path, params=query)
        assert response.status_code == 200, response.text
        out.append(response.json()["items"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return out


@pytest.mark.parametrize("limit", [1, 2, 4, 5, 50])
def test_job_pages_at_ties_of_created_at(service: Service, limit: int) -> None:
    rows = tied_jobs()
    add_jobs(service, rows)
    newest_first = sorted(rows, key=lambda r: (r[2], r[0]), reverse=True)
    got = pages(service, "/v1/jobs", limit)
    assert all(len(page) == limit for page in got[:-1]) and 1 <= len(got[-1]) <= limit
    assert [j["id"] for page in got for j in page] == [r[0] for r in newest_first]
    # Queue positions: claims take the oldest (created_at, id) first.
    queue = [r[0] for r in sorted(rows, key=lambda r: (r[2], r[0])) if r[1] == "queued"]
    for page in got:
        for job in page:
            expected = queue.index(job["id"]) if job["id"] in queue else None
            assert job["queue_position"] == expected
            assert service.job(job["id"])["queue_position"] == expected


@pytest.mark.parametrize("statuses", [["queued"], ["queued", "failed"], ["running", "succeeded"]])
def test_job_pages_filtered_by_status_at_ties(service: Service, statuses: list[str]) -> None:
    rows = tied_jobs()
    add_jobs(service, rows)
    kept = sorted((r for r in rows if r[1] in statuses), key=lambda r: (r[2], r[0]), reverse=True)
    got = pages(service, "/v1/jobs", 3, status=statuses)
    assert [j["id"] for page in got for j in page] == [r[0] for r in kept]
    queue = [r[0] for r in sorted(rows, key=lambda r: (r[2], r[0])) if r[1] == "queued"]
    assert all(
        j["queue_position"] == (queue.index(j["id"]) if j["status"] == "queued" else None) for p in got for j in p
    )


def test_queue_positions_of_a_page_that_skips_queued_jobs(service: Service) -> None:
    # A page narrowed by more than status (as lists of one owner's jobs are) does not hold every
    # queued job of its span; positions still count the whole queue.
    rows = tied_jobs()
    add_jobs(service, rows)
    queue = [r[0] for r in sorted(rows, key=lambda r: (r[2], r[0])) if r[1] == "queued"]
    with Session(service.engine) as session:
        page = [session.get_one(Job, job_id) for job_id in queue[1::3]]
        page.append(session.get_one(Job, next(r[0] for r in rows if r[1] == "running")))
        assert jobs.queue_positions(session, page) == {job_id: queue.index(job_id) for job_id in queue[1::3]}


def test_dataset_pages_at_ties_of_created_at(service: Service) -> None:
    ids = [f"ds_{i:02d}{random.Random(i).randrange(16**6):06x}" for i in range(11)]
    for i, dataset_id in enumerate(ids):
        add_dataset(service, dataset_id, T0 + timedelta(seconds=i % 3))
    expected = sorted(ids, key=lambda d: (T0 + timedelta(seconds=ids.index(d) % 3), d), reverse=True)
    got = pages(service, "/v1/datasets", 2)
    assert [d["id"] for page in got for d in page] == expected


def add_points(service: Service, job_id: str, points: list[tuple[str, int]]) -> None:
    """Metric points (key, step) in this order; each one's value is its position, so the API's
    answers name the rows they return."""
    with Session(service.engine) as session, session.begin():
        session.execute(
            insert(Metric),
            [
                {
                    "job_id": job_id,
                    "key": key,
                    "value": float(n),
                    "step": step,
                    "epoch": 1,
                    "timestamp": n,
                    "attempt": 1,
                }
                for n, (key, step) in enumerate(points)
            ],
        )


def expected_downsample(points: list[tuple[str, int]], keys: list[str], m: int) -> list[tuple[str, int, float]]:
    """The documented rule, written out: per key, points ordered by (step, id); all of them when at
    most m, else the last one and, for i = 0 .. m - 2, the first at or after a + ceil(i (b - a) / (m - 1))."""
    out: list[tuple[str, int, float]] = []
    for key in sorted(keys):
        rows = sorted((step, n) for n, (k, step) in enumerate(points) if k == key)
        if len(rows) > m:
            a, b = rows[0][0], rows[-1][0]
            targets = [a + math.ceil(i * (b - a) / (m - 1)) for i in range(m - 1)]
            rows = sorted({next(r for r in rows if r[0] >= t) for t in targets} | {rows[-1]})
        out.extend((key, step, float(n)) for step, n in rows)
    return out


def downsample(service: Service, job_id: str, m: int, *keys: str) -> list[tuple[str, int, float]]:
    response = service.client.get(f"/v1/jobs/{job_id}/metrics", params={"key": list(keys), "max_points": m})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_page_token"] is None
    return [(p["key"], p["step"], p["value"]) for p in body["metrics"]]


def test_downsampling_keeps_the_first_point_at_each_evenly_spaced_step(service: Service) -> None:
    add_jobs(service, [("job_ds", "succeeded", T0)])
    add_points(service, "job_ds", [("lr", step) for step in range(11)])
    # a = 0, b = 10, m = 4: steps 0, ceil(10/3) = 4, ceil(20/3) = 7, and the last
    assert [s for _, s, _ in downsample(service, "job_ds", 4, "lr")] == [0, 4, 7, 10]
    assert [s for _, s, _ in downsample(service, "job_ds", 11, "lr")] == list(range(11))
    assert [s for _, s, _ in downsample(service, "job_ds", 2, "lr")] == [0, 10]


def test_downsampling_at_gaps_in_the_steps(service: Service) -> None:
    add_jobs(service, [("job_ds", "succeeded", T0)])
    # Steps jump (a key is logged at ten points per epoch), one point per step.
    add_points(service, "job_ds", [("wps", s) for s in (0, 1, 7, 8, 9)])
    got = downsample(service, "job_ds", 3, "wps")
    # first (step 0), the first row at step >= ceil(9 / 2) = 5 (step 7), the last row (step 9)
    assert got == [("wps", 0, 0.0), ("wps", 7, 2.0), ("wps", 9, 4.0)]


def test_downsampling_matches_the_rule_on_irregular_histories(service: Service) -> None:
    add_jobs(service, [("job_ds", "succeeded", T0)])
    rng = random.Random(3)
    points: list[tuple[str, int]] = []
    step = {"lr": 0, "wps": 0, "train_ppl_running": 0, "test_ppl": 0}
    for _ in range(900):
        key = rng.choice(["lr", "wps", "train_ppl_running", "train_ppl_running"])
        step[key] += rng.choice([1, 1, 2, 3, 7, 40])
        points.append((key, step[key]))
    points.append(("test_ppl", 5))
    # Recorded out of step order too: a requeued attempt logs the steps after its checkpoint again.
    lr_steps = {s for k, s in points if k == "lr"}
    points.extend(("lr", s) for s in (min(set(range(1, 1000)) - lr_steps), step["lr"] + 1000))
    add_points(service, "job_ds", points)
    every_key = ["lr", "wps", "train_ppl_running", "test_ppl"]
    for m in (2, 3, 7, 50, 199, 400, 10_000):
        assert downsample(service, "job_ds", m) == expected_downsample(points, every_key, m)
        assert downsample(service, "job_ds", m, "wps", "test_ppl") == expected_downsample(
            points, ["wps", "test_ppl"], m
        )
        got = downsample(service, "job_ds", m)
        assert all(sum(k == key for k, _, _ in got) <= m for key in every_key)


def test_metric_pages_over_several_keys_in_recorded_order(service: Service) -> None:
    add_jobs(service, [("job_ds", "succeeded", T0)])
    rng = random.Random(5)
    points = [(rng.choice(["lr", "wps", "valid_ppl"]), i) for i in range(120)]
    add_points(service, "job_ds", points)
    for keys in ([], ["wps"], ["lr", "valid_ppl"], ["lr", "wps", "valid_ppl", "test_ppl"]):
        expected = [(k, s) for k, s in points if not keys or k in keys]
        seen: list[tuple[str, int]] = []
        token = None
        while True:
            params: dict[str, Any] = {"key": keys, "limit": 7} | ({"page_token": token} if token else {})
            body = service.client.get("/v1/jobs/job_ds/metrics", params=params).json()
            seen.extend((p["key"], p["step"]) for p in body["metrics"])
            token = body["next_page_token"]
            if token is None:
                break
        assert seen == expected
