"""Store reads as the tables grow: median and p95 latency of the job list, one job, metric pages,
downsampled metrics, a claim and the expired-lease sweep, at 10 jobs / 10k metric points and at
10,000 jobs / 1M points, and the ratio large / small.

Each size gets a fresh database migrated with the project's migrations and filled with bulk inserts
into its tables: 40% of the jobs queued, 40% running (leases not yet expired), 20% succeeded, one
second apart in `created_at`; one succeeded job holds 90% of the points (the metrics read), the
others share the rest, in the worker's pattern (per epoch ten progress points of
`train_ppl_running`, `wps` and `lr`, then `train_ppl`, `valid_ppl`, `lr`, `wps`).

At the small size `limit=50` pages hold 10 jobs (4 when only the queued are asked for), at the
large size 50; the `limit=10` and `status=queued&limit=4` pages hold as many jobs at both sizes.
The reads go through the real app in process (FastAPI's TestClient); the claim and the sweep are
the worker's own functions (each claimed job is put back in the queue, untimed).

    .venv/bin/python bench/store_growth.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/store_growth.py --db sqlite --large-points 200000

PostgreSQL: `--postgres-url` (default $TEST_POSTGRES_URL or postgresql+psycopg://postgres@127.0.0.1:5432/test)
names the server; the benchmark creates the databases `store_bench_small` and `store_bench_large`
there and drops them afterwards. Both sizes are filled first, then measured call by call in turn.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, make_url, text, update
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere without installing the package

from fastapi.testclient import TestClient  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store import migrate  # noqa: E402
from app.store.db import make_engine  # noqa: E402
from app.store.tables import Dataset, Job  # noqa: E402
from app.training.queue import claim_next, requeue_expired  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BIG_JOB = "job_big"
PROGRESS_KEYS = ("train_ppl_running", "wps", "lr")
EPOCH_KEYS = ("train_ppl", "valid_ppl", "lr", "wps")
STEPS_PER_EPOCH = 2323


def job_rows(count: int) -> list[dict[str, Any]]:
    """`count` jobs one second apart; the big job is the middle one, succeeded."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        job_id = BIG_JOB if i == count // 2 else f"job_{i:016x}"
        kind = i % 10
        status = "succeeded" if job_id == BIG_JOB or kind >= 8 else "queued" if kind < 4 else "running"
        running = status == "running"
        rows.append(
            {
                "id": job_id,
                "status": status,
                "preset": "small",
                "overrides": {},
                "config": {},
                "dataset_id": "ds_bench",
                "attempt": 1 if status != "queued" else 0,
                "max_attempts": 3,
                "worker_id": "w-bench" if running else None,
                "lease_expires_at": T0 + timedelta(days=3650) if running else None,
                "progress": {},
                "created_at": T0 + timedelta(seconds=i),
                "updated_at": T0 + timedelta(seconds=i),
            }
        )
    return rows


def metric_rows(job_id: str, count: int) -> Iterator[tuple[Any, ...]]:
    """`count` points of one job in the worker's pattern: (job_id, key, value, step, epoch, timestamp, attempt)."""
    n, epoch = 0, 0
    while True:
        epoch += 1
        base = (epoch - 1) * STEPS_PER_EPOCH
        # the last progress point falls on the epoch's last step, where the summary writes lr and wps
        batch = [
            (key, base + (p + 1) * STEPS_PER_EPOCH // 10)
            for p in range(10)
            for key in PROGRESS_KEYS
            if p < 9 or key not in EPOCH_KEYS
        ]
        batch += [(key, base + STEPS_PER_EPOCH) for key in EPOCH_KEYS]
        for key, step in batch:
            if n == count:
                return
            yield (job_id, key, 100.0 + n % 97, step, epoch, 1_767_225_600_000 + n, 1)
            n += 1


def all_metric_rows(job_ids: list[str], points: int) -> Iterator[tuple[Any, ...]]:
    big = points * 9 // 10
    yield from metric_rows(BIG_JOB, big)
    others = [j for j in job_ids if j != BIG_JOB]
    share, extra = divmod(points - big, len(others))
    for i, job_id in enumerate(others):
        yield from metric_rows(job_id, share + (1 if i < extra else 0))


def fill(engine: Engine, jobs: int, points: int) -> None:
    """Bulk-insert the dataset, `jobs` jobs and `points` metric points."""
    columns = ("job_id", "key", "value", "step", "epoch", "timestamp", "attempt")
    rows = job_rows(jobs)
    with engine.begin() as connection:
        connection.execute(
            insert(Dataset),
            [
                {
                    "id": "ds_bench",
                    "name": "bench",
                    "source": "upload",
                    "path": "/nowhere",
                    "train_tokens": 1,
                    "valid_tokens": 1,
                    "test_tokens": 1,
                    "vocab_size": 2,
                    "size_bytes": 1,
                    "created_at": T0,
                }
            ],
        )
        connection.execute(insert(Job), rows)
    points_iter = all_metric_rows([r["id"] for r in rows], points)
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            with cursor.copy(f"COPY metrics ({', '.join(columns)}) FROM STDIN") as copy:
                for row in points_iter:
                    copy.write_row(row)
            raw.commit()
        finally:
            raw.close()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))  # what autovacuum does after a bulk load
        return
    insert_points = f"INSERT INTO metrics ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    with engine.begin() as connection:
        while chunk := list(islice(points_iter, 100_000)):
            connection.exec_driver_sql(insert_points, chunk)


def timed_once(fn: Callable[[], Any], after: Callable[[], Any] | None = None) -> float:
    """Milliseconds of one call; `after` runs untimed."""
    start = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - start) * 1000
    if after is not None:
        after()
    return elapsed


def ok(client: TestClient, url: str, **params: Any) -> Any:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


Probe = tuple[Callable[[], Any], Callable[[], Any] | None]  # (timed call, untimed undo)


def paths(stack: ExitStack, url: str, data_dir: Path) -> dict[str, Probe]:
    """Every measured path on the filled database at `url`, as (call, undo) pairs."""
    values: dict[str, Any] = {"data_dir": data_dir, "database_url": url}
    if "auth" in Settings.model_fields:  # the reads are measured without key checks
        values["auth"] = False
    settings = Settings(_env_file=None, **values)
    engine = make_engine(url)
    stack.callback(engine.dispose)
    client = stack.enter_context(TestClient(create_app(settings)))
    cursor = ok(client, "/v1/jobs", limit=5)["next_cursor"]
    newest_queued = ok(client, "/v1/jobs", status="queued", limit=1)["items"][0]["id"]
    metrics_url = f"/v1/jobs/{BIG_JOB}/metrics"
    claimed: list[str] = []

    def claim() -> None:
        job = claim_next(engine, "w-bench-claim", lease_seconds=60)
        assert job is not None
        claimed.append(job.id)

    def put_back() -> None:
        with engine.begin() as connection:
            connection.execute(
                update(Job)
                .where(Job.id == claimed.pop())
                .values(status="queued", attempt=0, worker_id=None, lease_expires_at=None, started_at=None)
            )

    return {
        "GET /v1/jobs?limit=50": (lambda: ok(client, "/v1/jobs", limit=50), None),
        "GET /v1/jobs?limit=10": (lambda: ok(client, "/v1/jobs", limit=10), None),
        "GET /v1/jobs?limit=5&cursor=(page 2)": (lambda: ok(client, "/v1/jobs", limit=5, cursor=cursor), None),
        "GET /v1/jobs?status=queued&limit=50": (lambda: ok(client, "/v1/jobs", limit=50, status="queued"), None),
        "GET /v1/jobs?status=queued&limit=4": (lambda: ok(client, "/v1/jobs", limit=4, status="queued"), None),
        "GET /v1/jobs/{newest queued}": (lambda: ok(client, f"/v1/jobs/{newest_queued}"), None),
        "metrics?limit=500": (lambda: ok(client, metrics_url, limit=500), None),
        "metrics?key=wps&limit=500": (lambda: ok(client, metrics_url, limit=500, key="wps"), None),
        "metrics?max_points=200 (6 keys)": (lambda: ok(client, metrics_url, max_points=200), None),
        "metrics?key=train_ppl_running&max_points=200": (
            lambda: ok(client, metrics_url, max_points=200, key="train_ppl_running"),
            None,
        ),
        "claim_next": (claim, put_back),
        "requeue_expired (none expired)": (lambda: requeue_expired(engine), None),
    }


@contextmanager
def database(kind: str, postgres_url: str, folder: Path, name: str) -> Iterator[str]:
    """A fresh, migrated database `name`: a SQLite file under `folder` or a database on the server."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / name}.db"
        migrate.upgrade(url)
        yield url
        return
    admin = make_engine(postgres_url, poolclass=NullPool)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def stats(ms: list[float]) -> tuple[float, float, float]:
    """Median, 95th percentile and minimum."""
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[round(0.95 * (len(ordered) - 1))], ordered[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--large-jobs", type=int, default=10_000)
    parser.add_argument("--large-points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per path and size")
    args = parser.parse_args()
    sizes = {"small": (10, 10_000), "large": (args.large_jobs, args.large_points)}
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            measured: dict[str, dict[str, Probe]] = {}
            for size, (jobs, points) in sizes.items():
                url = stack.enter_context(database(kind, args.postgres_url, Path(tmp), f"store_bench_{size}"))
                engine = make_engine(url)
                start = time.perf_counter()
                fill(engine, jobs, points)
                engine.dispose()
                print(f"{kind}: {jobs:,} jobs, {points:,} points filled in {time.perf_counter() - start:.1f} s")
                measured[size] = paths(stack, url, Path(tmp) / size)
            # Sizes alternate call by call (after two warm-up calls each), so a busy machine slows both alike.
            samples: dict[str, dict[str, list[float]]] = {size: {p: [] for p in measured[size]} for size in sizes}
            for path in measured["small"]:
                for i in range(args.repeats + 2):
                    for size in sizes:
                        ms = timed_once(*measured[size][path])
                        if i >= 2:
                            samples[size][path].append(ms)
        small, large = sizes["small"], sizes["large"]
        print(f"\n{kind}: {small[0]:,} jobs / {small[1]:,} points vs {large[0]:,} jobs / {large[1]:,} points")
        print("milliseconds; ratio = large / small, of the medians (and of the minimums)")
        print(
            f"{'path':46} | {'small: med':>10} {'p95':>7} {'min':>6} | {'large: med':>10} {'p95':>7} {'min':>6} | ratio"
        )
        for path in samples["small"]:
            s_med, s_p95, s_min = stats(samples["small"][path])
            l_med, l_p95, l_min = stats(samples["large"][path])
            print(
                f"{path:46} | {s_med:10.2f} {s_p95:7.2f} {s_min:6.2f} | {l_med:10.2f} {l_p95:7.2f} {l_min:6.2f}"
                f" | {l_med / s_med:.2f}x ({l_min / s_min:.2f}x)"
            )
        print()


if __name__ == "__main__":
    main()
