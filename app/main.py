"""The FastAPI application factory. Run with `python -m app run` (see the README)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from app.api import checkpoints, completions, datasets, generation, health, jobs, metrics, models, problems, scoring
from app.api.limits import MULTIPART_OVERHEAD, BodySizeLimit
from app.inference.registry import ModelCache
from app.inference.slots import Slots
from app.settings import Settings, get_settings
from app.store.db import make_engine, session_factory
from app.training.sweep import sweep_datasets

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine is created here, not at import time."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # what a killed API left: unfinished uploads, dataset folders without a row
            await anyio.to_thread.run_sync(sweep_datasets, app.state.engine, settings)
        except Exception:  # cleaning up must never keep the API from serving
            log.warning("could not sweep the datasets folder", exc_info=True)
        yield
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
    app.state.model_cache = ModelCache(settings.model_cache_size)
    problems.install(app)
    # Routers are included below, one line per concept.
    app.state.inference_slots = Slots(settings.max_concurrent_inference, "scoring or generation requests")
    app.state.event_slots = Slots(settings.max_event_streams, "event streams")
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_json_bytes,
        routes={("POST", "/v1/datasets"): settings.max_upload_bytes + MULTIPART_OVERHEAD},
    )
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(checkpoints.router)
    app.include_router(models.router)
    app.include_router(scoring.router)
    app.include_router(generation.router)
    app.include_router(completions.router)
    return app
