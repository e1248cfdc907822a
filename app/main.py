"""The FastAPI application factory. Run with `python -m app run` (see the README)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import Engine

from app.api import (
    checkpoints,
    completions,
    datasets,
    generation,
    health,
    jobs,
    logs,
    metrics,
    models,
    presets,
    problems,
    prometheus,
    scoring,
)
from app.api import scorings as scoring_jobs
from app.api import session as login_session
from app.api import tokenizer as tokenizer_routes
from app.api.auth import AuthGate
from app.api.limits import MULTIPART_OVERHEAD, BodySizeLimit
from app.api.origin import SameOriginGuard
from app.inference.batcher import Batchers
from app.inference.registry import ModelCache, Resolver
from app.inference.slots import Slots
from app.observability.middleware import RequestMetrics
from app.observability.prometheus import Observability
from app.settings import Settings, get_settings
from app.store.db import make_engine, session_factory
from app.store.storage import open_storage
from app.training.queue import lease_sweep_interval, requeue_expired_leases
from app.training.sweep import sweep_datasets
from app.web import pages
from app.web.headers import SecurityHeaders

log = logging.getLogger(__name__)


async def sweep_leases(engine: Engine, interval: float) -> None:
    """Every `interval` seconds, settle the training jobs and scorings whose lease expired (queued
    again, failed or canceled), in a thread off the event loop. Workers do the same before each
    claim; this sweep is what puts a job back when no worker is alive to look."""
    while True:
        try:
            jobs, scorings = await anyio.to_thread.run_sync(requeue_expired_leases, engine)
            if jobs or scorings:
                log.info("requeued or failed %d job(s) and %d scoring(s) whose lease expired", jobs, scorings)
        except Exception:  # a database hiccup: the next sweep tries again
            log.warning("could not sweep expired leases", exc_info=True)
        await anyio.sleep(interval)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine is created here, not at import time."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # what a killed API left: unfinished uploads, dataset folders without a row
            await anyio.to_thread.run_sync(sweep_datasets, app.state.engine, settings)
        except Exception:  # cleaning up must never keep the API from serving
            log.warning("could not sweep the datasets in storage", exc_info=True)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sweep_leases, app.state.engine, lease_sweep_interval(settings.lease_seconds))
            yield
            tasks.cancel_scope.cancel()
        app.state.engine.dispose()

    app = FastAPI(
        title="LSTM language-model service",
        version="0.1.0",
        description="Train word-level LSTM language models as jobs, follow their metrics, score text and generate.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.resolved_database_url)
    app.state.sessions = session_factory(app.state.engine)
    app.state.model_cache = ModelCache(settings.model_cache_size, open_storage(settings))
    app.state.resolver = Resolver(app.state.sessions)
    app.state.observability = Observability(app.state.engine, app.state.model_cache, settings.lease_seconds)
    problems.install(app)
    # Routers are included below, one line per concept.
    app.state.inference_slots = Slots(
        settings.max_concurrent_inference,
        "generation requests",
        wait_seconds=settings.max_queue_seconds,
        max_waiting=4 * settings.max_concurrent_inference,
    )
    app.state.batchers = Batchers(settings.score_batch_tokens, settings.max_queue_tokens, settings.max_queue_seconds)
    app.state.event_slots = Slots(settings.max_event_streams, "event streams")
    # Keys are checked before a body is read; bodies are bounded; cross-site requests are refused first.
    app.add_middleware(AuthGate, settings=settings, engine=app.state.engine)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_json_bytes,
        routes={
            ("POST", "/v1/datasets"): settings.max_upload_bytes + MULTIPART_OVERHEAD,
            ("POST", "/v1/scorings"): settings.max_upload_bytes + MULTIPART_OVERHEAD,
        },
    )
    # CORS (outside the guards, to answer preflights) only for the listed origins.
    app.add_middleware(SameOriginGuard, allowed_origins=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    app.add_middleware(SecurityHeaders)  # CSP, nosniff, no framing, same-origin referrers on every answer
    app.add_middleware(RequestMetrics, observability=app.state.observability)  # outermost: counts every answer
    app.include_router(health.router)
    app.include_router(prometheus.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(logs.router)
    app.include_router(checkpoints.router)
    app.include_router(models.router)
    app.include_router(scoring.router)
    app.include_router(generation.router)
    app.include_router(completions.router)
    app.include_router(completions.scoped_router)
    app.include_router(presets.router)
    app.include_router(login_session.router)
    pages.install(app)  # the dashboard at /, apart from the API
    app.include_router(tokenizer_routes.router)
    app.include_router(scoring_jobs.router)
    return app
