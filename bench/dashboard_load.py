"""How long the dashboard's pages take to load their data, with a long job and many jobs.

    .venv/bin/python bench/dashboard_load.py              # 10,030 metric points, 2,000 jobs
    .venv/bin/python bench/dashboard_load.py --browser    # also time the page in Chromium (Playwright)
    .venv/bin/python bench/dashboard_load.py --json       # one JSON line

It builds a SQLite service data folder with one running job of 295 epochs whose metric history has
the worker's shape (per epoch: `train_ppl_running`, `wps` and `lr` at ten progress points, then
`train_ppl`, `valid_ppl`, `lr` and `wps`): 295 x 34 = 10,030 points, plus 2,000 other jobs. The API
runs in a uvicorn subprocess. Then it makes, one after the other, the API calls the job page makes
(whoami, the job, its dataset, the event stream up to its first `status` event, the downsampled
metric history, the checkpoints, the logs) and the jobs page makes (one page of 50, the first, a
deep one and a filtered one), and prints the median and the worst of `--repeats` rounds. For
contrast it also reads the whole history without `max_points`, as a page that did not downsample
would. With `--browser` it loads the job page in Debian's Chromium and times navigation to the
first drawn chart.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from serving import serve
from sqlalchemy import update

from app.settings import Settings
from app.store import migrate
from app.store.db import make_engine, write_session
from app.store.tables import Job, Metric, new_id
from app.training import datasets, jobs

EPOCHS, STEPS = 295, 200  # 295 epochs x 34 points = 10,030 points
OTHER_JOBS = 2000
MAX_POINTS = 1000  # what the job page asks for per key (app/web/static/js/job.js)
PAGE_KEYS = ("train_ppl_running", "train_ppl", "valid_ppl", "lr", "wps")


def build(data_dir: Path) -> tuple[str, str]:
    """The service's data: a dataset, one long running job with its history, many other jobs."""
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    rng = random.Random(0)
    words = [f"w{i}" for i in range(50)]
    text = {
        s: "".join(" ".join(rng.choices(words, k=8)) + "\n" for _ in range(n))
        for s, n in (("train", 400), ("valid", 50), ("test", 50))
    }
    dataset = datasets.create_upload(engine, settings, "ptb-like", {k: io.BytesIO(v.encode()) for k, v in text.items()})
    overrides = {"hidden_size": 8, "num_steps": 5, "batch_size": 4, "max_max_epoch": EPOCHS}
    job, _ = jobs.submit(engine, settings, dataset_id=dataset.id, preset_name="test", overrides=overrides)

    now = int(time.time() * 1000)
    points: list[Metric] = []
    for epoch in range(1, EPOCHS + 1):
        lr = 0.5 ** max(epoch - 4, 0)
        for tenth in range(1, 11):
            step = (epoch - 1) * STEPS + tenth * STEPS // 10
            for key, value in (("train_ppl_running", 300 / epoch**0.5 + 40), ("wps", 5000.0), ("lr", lr)):
                if tenth == 10 and key != "train_ppl_running":
                    continue  # the epoch's summary below writes lr and wps at its last step
                points.append(
                    Metric(job_id=job.id, key=key, value=value, step=step, epoch=epoch, timestamp=now, attempt=1)
                )
        step = epoch * STEPS
        for key, value in (
            ("train_ppl", 280 / epoch**0.5 + 38),
            ("valid_ppl", 200 / epoch**0.3 + 90),
            ("lr", lr),
            ("wps", 5000.0),
        ):
            points.append(Metric(job_id=job.id, key=key, value=value, step=step, epoch=epoch, timestamp=now, attempt=1))
    progress = {"phase": "train", "epoch": EPOCHS, "epochs": EPOCHS, "step": 100, "steps": STEPS, "fraction": 0.5}
    with write_session(engine) as session:
        session.add_all(points)
        session.execute(update(Job).where(Job.id == job.id).values(status="running", attempt=1, progress=progress))
        session.add_all(
            Job(
                id=new_id("job"),
                status=rng.choice(jobs.TERMINAL),
                preset="test",
                overrides=overrides,
                config=job.config,
                dataset_id=dataset.id,
                attempt=1,
                max_attempts=3,
                progress={},
            )
            for _ in range(OTHER_JOBS)
        )
    engine.dispose()
    return job.id, dataset.id


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def first_status_event(client: httpx.Client, path: str) -> None:
    """Open the event stream and read until its first `status` event (what the page waits for)."""
    with client.stream("GET", path) as response:
        for line in response.iter_lines():
            if line.startswith("event: status"):
                return


def job_page(client: httpx.Client, job_id: str, dataset_id: str) -> dict[str, Any]:
    """The job page's API calls, in sequence; seconds per call and the metric points received."""
    keys = "&".join(f"key={k}" for k in PAGE_KEYS)
    calls = {
        "whoami": lambda: client.get("/v1/whoami"),
        "job": lambda: client.get(f"/v1/jobs/{job_id}"),
        "dataset": lambda: client.get(f"/v1/datasets/{dataset_id}"),
        "events_open": lambda: first_status_event(client, f"/v1/jobs/{job_id}/events?history=false"),
        "metrics": lambda: client.get(f"/v1/jobs/{job_id}/metrics?{keys}&max_points={MAX_POINTS}"),
        "checkpoints": lambda: client.get(f"/v1/jobs/{job_id}/checkpoints"),
        "logs": lambda: client.get(f"/v1/jobs/{job_id}/logs?limit=500"),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        out[name], answer = timed(call)
        if name == "metrics":
            out["points"] = len(answer.json()["metrics"])
            out["metrics_bytes"] = len(answer.content)
    out["total"] = sum(v for k, v in out.items() if k not in ("points", "metrics_bytes"))
    return out


def jobs_page(client: httpx.Client) -> dict[str, float]:
    first_time, first = timed(lambda: client.get("/v1/jobs?limit=50"))
    cursor = first.json()["next_cursor"]
    for _ in range(20):  # walk to page 21
        cursor = client.get(f"/v1/jobs?limit=50&cursor={cursor}").json()["next_cursor"]
    deep_time, _ = timed(lambda: client.get(f"/v1/jobs?limit=50&cursor={cursor}"))
    filtered_time, _ = timed(lambda: client.get("/v1/jobs?limit=50&status=running&status=queued"))
    return {"first_page": first_time, "page_21": deep_time, "filtered": filtered_time}


def full_history(client: httpx.Client, job_id: str) -> tuple[float, int]:
    """Every point, paged without downsampling: what a page that ignored max_points would load."""
    start = time.perf_counter()
    count, token = 0, None
    while True:
        page = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 10_000, "page_token": token}).json()
        count += len(page["metrics"])
        token = page["next_page_token"]
        if not token:
            return time.perf_counter() - start, count


def browser_load(url: str, job_id: str) -> float | None:
    """Seconds from navigation to the perplexity chart drawn with the history, in Chromium."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(f"{url}/", wait_until="load")  # warm the static files' cache
        start = time.perf_counter()
        page.goto(f"{url}/jobs/{job_id}")
        page.wait_for_function("Number(document.getElementById('ppl-chart').dataset.points) > 1000", timeout=30_000)
        page.wait_for_selector("#ppl-chart canvas")
        seconds = time.perf_counter() - start
        browser.close()
        return seconds


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--browser", action="store_true", help="also time the job page in Chromium")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        job_id, dataset_id = build(data_dir)
        with serve(data_dir) as url, httpx.Client(base_url=url, timeout=30) as client:
            job_page(client, job_id, dataset_id)  # warm-up
            rounds = [job_page(client, job_id, dataset_id) for _ in range(args.repeats)]
            lists = [jobs_page(client) for _ in range(max(3, args.repeats // 4))]
            full = [full_history(client, job_id) for _ in range(3)]
            browser = browser_load(url, job_id) if args.browser else None
    result = {
        "metric_points": EPOCHS * 34,
        "jobs": OTHER_JOBS + 1,
        "points_loaded": rounds[0]["points"],
        "metrics_bytes": rounds[0]["metrics_bytes"],
        "job_page_total": summary([r["total"] for r in rounds]),
        "job_page_calls": {
            k: summary([r[k] for r in rounds]) for k in rounds[0] if k not in ("points", "metrics_bytes", "total")
        },
        "jobs_page": {k: summary([r[k] for r in lists]) for k in lists[0]},
        "full_history": {**summary([f[0] for f in full]), "points": full[0][1]},
        "browser_job_page_s": None if browser is None else round(browser, 3),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    total = result["job_page_total"]
    print(
        f"job page: {result['metric_points']:,} metric points in the job, {result['points_loaded']:,} loaded "
        f"({result['metrics_bytes']:,} bytes), all calls in sequence: median {total['median_ms']} ms, "
        f"worst {total['max_ms']} ms over {args.repeats} rounds"
    )
    for name, s in result["job_page_calls"].items():
        print(f"  {name:12s} median {s['median_ms']:7.1f} ms  worst {s['max_ms']:7.1f} ms")
    print(f"jobs page ({result['jobs']:,} jobs, 50 a page):")
    for name, s in result["jobs_page"].items():
        print(f"  {name:12s} median {s['median_ms']:7.1f} ms  worst {s['max_ms']:7.1f} ms")
    f = result["full_history"]
    print(f"without max_points: {f['points']:,} points in median {f['median_ms']} ms")
    if browser is not None:
        print(f"Chromium: job page navigation to the drawn chart {browser:.3f} s")
    verdict = "under" if total["max_ms"] < 1000 else "NOT under"
    print(f"the job page's data loads {verdict} 1 s (worst round {total['max_ms']} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
