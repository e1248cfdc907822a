"""The service's Prometheus metrics, one registry per app.

Counters kept in this process: HTTP requests and their latency (`HttpMetrics`), tokens scored and
generated. Values that live elsewhere are read when scraped, by custom collectors: the model
cache's hits, misses and loads, and from the database the jobs by status, the queue, the workers'
heartbeats and the running jobs' training speed. The database reads are a few bounded queries on
indexed columns, so every API process in front of one database reports the same values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.inference.registry import ModelCache
from app.store.tables import Job, Worker, utcnow
from app.training.jobs import ACTIVE, QUEUED, STATUSES

PREFIX = "lstmlm"
MAX_SERIES = 100  # per-worker and per-job series at most: labels stay bounded
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DatabaseCollector(Collector):
    """Jobs, queue and workers, read from the database at scrape time."""

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
            workers = session.execute(
                select(Worker.id, Worker.heartbeat_at)
                .where(Worker.stopped_at.is_(None))
                .order_by(Worker.heartbeat_at.desc())
                .limit(MAX_SERIES)
            ).all()
            running = session.execute(
                select(Job.id, Job.progress).where(Job.status.in_(ACTIVE)).order_by(Job.id).limit(MAX_SERIES)
            ).all()
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "jobs by status", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(f"{PREFIX}_queue_depth", "queued jobs", value=counts.get(QUEUED, 0))
        age = 0.0 if oldest is None else max((now - _aware(oldest)).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_age_seconds", "age of the oldest queued job (0 when none)", value=age
        )
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
        self.registry.register(DatabaseCollector(engine, live_seconds))
        self.registry.register(ModelCacheCollector(cache))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)

    def exposition(self) -> bytes:
        """The text format a Prometheus server scrapes."""
        return generate_latest(self.registry)


def _aware(value: datetime) -> datetime:
    """Stored times are UTC; a driver that forgets the zone gets it back."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
