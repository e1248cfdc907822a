"""The service's Prometheus metrics, one registry per app.

Counters kept in this process: HTTP requests and their latency (`HttpMetrics`), tokens scored and
generated. Values that live elsewhere are read when scraped, by custom collectors: the model
cache's hits, misses and loads, and from the database the training jobs and the scorings by status,
both queues, the jobs that ended, the workers' heartbeats and the running jobs' training speed. The
database reads are a few bounded queries on indexed columns, so every API process in front of one
database reports the same values, and a restart changes none of them.

Jobs end in the workers, not in an API process, so the ended jobs are not counted in memory at the
transitions (each API process would see none of them, and a restart would forget them): they are
the stored rows in each final status, a gauge, which deleting a finished job lowers.

The client library's `_created` series (a timestamp beside every counter and histogram) are turned
off for the whole process when this module is imported; the library asks at every scrape, so this
holds for every registry, ours included.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.inference.registry import ModelCache
from app.store.tables import Job, Scoring, Worker, utcnow
from app.training.jobs import ACTIVE, QUEUED, STATUSES, TERMINAL

PREFIX = "lstmlm"
MAX_SERIES = 100  # per-worker and per-job series at most: labels stay bounded
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DISTRIBUTION = "lstm-lm-service"

disable_created_metrics()  # no `_created` series: they double every counter and say nothing Prometheus needs


class DatabaseCollector(Collector):
    """Jobs, scorings, both queues and workers, read from the database at scrape time."""

    def __init__(self, engine: Engine, live_seconds: float) -> None:
        self.engine = engine
        self.live_seconds = live_seconds  # a worker that beat within this many seconds is alive

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(f"{PREFIX}_database_up", "1 when the last scrape could read the database")
        try:
            families = list(self._read())
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[Any]:
        now = utcnow()
        with Session(self.engine) as session:
            counts: dict[str, int] = {
                s: n for s, n in session.execute(select(Job.status, func.count()).group_by(Job.status))
            }
            oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == QUEUED))
            scorings: dict[str, int] = {
                s: n for s, n in session.execute(select(Scoring.status, func.count()).group_by(Scoring.status))
            }
            oldest_scoring = session.scalar(select(func.min(Scoring.created_at)).where(Scoring.status == QUEUED))
            workers = session.execute(
                select(Worker.id, Worker.heartbeat_at)
                .where(Worker.stopped_at.is_(None))
                .order_by(Worker.heartbeat_at.desc())
                .limit(MAX_SERIES)
            ).all()
            running = session.execute(
                select(Job.id, Job.progress).where(Job.status.in_(ACTIVE)).order_by(Job.id).limit(MAX_SERIES)
            ).all()
        yield from _queue_gauges("jobs", "queue", "jobs", "job", counts, _age(now, oldest))
        yield from _queue_gauges(
            "scorings", "scoring_queue", "scoring jobs", "scoring", scorings, _age(now, oldest_scoring)
        )
        ended = GaugeMetricFamily(
            f"{PREFIX}_jobs_ended",
            "training jobs and scorings stored in a final status (deleting one lowers it)",
            labels=["kind", "status"],
        )
        for kind, by in (("training", counts), ("scoring", scorings)):
            for status in TERMINAL:
                ended.add_metric([kind, status], by.get(status, 0))
        yield ended
        live_since = now - timedelta(seconds=self.live_seconds)
        yield GaugeMetricFamily(
            f"{PREFIX}_workers_live",
            f"workers not stopped whose heartbeat is at most {self.live_seconds:g} s old",
            value=sum(1 for _, beat in workers if _aware(beat) >= live_since),
        )
        beats = GaugeMetricFamily(
            f"{PREFIX}_worker_heartbeat_age_seconds",
            "seconds since each running worker's last heartbeat",
            labels=["worker"],
        )
        for worker_id, beat in workers:
            beats.add_metric([worker_id], max((now - _aware(beat)).total_seconds(), 0.0))
        yield beats
        speed = GaugeMetricFamily(
            f"{PREFIX}_job_train_words_per_second", "training words per second of each running job", labels=["job_id"]
        )
        for job_id, progress in running:
            wps = (progress or {}).get("wps")
            if isinstance(wps, int | float) and math.isfinite(wps):
                speed.add_metric([job_id], float(wps))
        yield speed


class ModelCacheCollector(Collector):
    """The model cache's hits, misses and loads since this process started, and its size."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Any]:
        stats = self.cache.stats()
        for name, help_text in (
            ("hits", "model look-ups served from memory"),
            ("misses", "model look-ups that had to read a checkpoint"),
            ("loads", "checkpoints loaded into the cache"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_model_cache_{name}", help_text, value=stats[name])
        yield GaugeMetricFamily(f"{PREFIX}_model_cache_models", "models in memory", value=stats["size"])


class Observability:
    """The registry of one app and the counters its routes and middleware update."""

    def __init__(self, engine: Engine, cache: ModelCache, live_seconds: float) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "time to answer a request (for streams: until the stream ends), by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens_scored = Counter(
            f"{PREFIX}_tokens_scored", "tokens scored (their log-probabilities computed)", registry=self.registry
        )
        self.tokens_generated = Counter(f"{PREFIX}_tokens_generated", "tokens generated", registry=self.registry)
        Info(
            f"{PREFIX}_build", "the service's version and the Python and torch it runs on", registry=self.registry
        ).info(build_info())
        self.registry.register(DatabaseCollector(engine, live_seconds))
        self.registry.register(ModelCacheCollector(cache))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)

    def exposition(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)


def build_info() -> dict[str, str]:
    """The labels of `lstmlm_build_info`: this service's version, Python's and torch's."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = "unknown"
    return {"version": version, "python": platform.python_version(), "torch": torch.__version__}


def _queue_gauges(
    name: str, queue: str, plural: str, noun: str, counts: dict[str, int], oldest_age: float
) -> Iterator[GaugeMetricFamily]:
    """A queue's gauges: `<name>{status}`, `<queue>_depth` and `<queue>_oldest_age_seconds`."""
    by_status = GaugeMetricFamily(f"{PREFIX}_{name}", f"{plural} by status", labels=["status"])
    for status in STATUSES:
        by_status.add_metric([status], counts.get(status, 0))
    yield by_status
    yield GaugeMetricFamily(f"{PREFIX}_{queue}_depth", f"queued {noun}s", value=counts.get(QUEUED, 0))
    yield GaugeMetricFamily(
        f"{PREFIX}_{queue}_oldest_age_seconds", f"age of the oldest queued {noun} (0 when none)", value=oldest_age
    )


def _age(now: datetime, oldest: datetime | None) -> float:
    """Seconds since `oldest` (0 when there is none)."""
    return 0.0 if oldest is None else max((now - _aware(oldest)).total_seconds(), 0.0)


def _aware(value: datetime) -> datetime:
    """Stored times are UTC; a driver that forgets the zone gets it back."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
