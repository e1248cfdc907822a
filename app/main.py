"""The FastAPI application factory. Run with `python -m app run` (see the README)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import checkpoints, completions, datasets, generation, health, jobs, metrics, models, problems, scoring
from app.api import scorings as scoring_jobs
from app.api import tokenizer as tokenizer_routes
from app.api.limits import MULTIPART_OVERHEAD, BodySizeLimit
from app.inference.registry import ModelCache
from app.settings import Settings, get_settings
from app.store.db import make_engine, session_factory


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine is created here, not at import time."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(metrics.router)
    app.include_router(checkpoints.router)
    app.include_router(models.router)
    app.include_router(scoring.router)
    app.include_router(generation.router)
    app.include_router(completions.router)
    app.include_router(tokenizer_routes.router)
    app.include_router(scoring_jobs.router)
    return app
