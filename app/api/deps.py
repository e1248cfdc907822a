"""Dependencies shared by the routes: settings, a database session per request, the session
factory (for routes that must not hold a session while they compute) and the concurrency slots.
Those that only read the app's state are `async`: FastAPI calls them on the event loop instead of
sending each one to the thread pool, a hop that costs more than the call."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.inference.batcher import Batchers
from app.inference.registry import ModelCache, Resolver
from app.inference.slots import Slots
from app.observability.prometheus import Observability
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


async def get_observability(request: Request) -> Observability:
    observability: Observability = request.app.state.observability
    return observability


async def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


async def get_inference_slots(request: Request) -> Slots:
    """The inference concurrency limit; a route takes a slot (`acquire()`, 503 with Retry-After when
    none is free) once its input is valid, and releases it when its answer or its stream ends."""
    slots: Slots = request.app.state.inference_slots
    return slots


async def get_batchers(request: Request) -> Batchers:
    """The app's scoring batchers (one per loaded model and precision)."""
    batchers: Batchers = request.app.state.batchers
    return batchers


BatchersDep = Annotated[Batchers, Depends(get_batchers)]


@dataclass(frozen=True)
class Serving:
    """What a scoring request uses of the app's state, as one dependency (one call instead of five
    on a route that every client may call hundreds of times a second)."""

    settings: Settings
    cache: ModelCache
    batchers: Batchers
    observability: Observability
    preparing: anyio.CapacityLimiter  # worker threads loading a model or tokenizing (`PREPARING`)
    resolver: Resolver  # model names, resolved in rounds


# Scoring requests loading their model or tokenizing a large input at once, each in a worker
# thread: more would only wait for the GIL.
PREPARING = 4


async def get_serving(request: Request) -> Serving:
    state = request.app.state
    preparing = getattr(state, "scoring_preparation", None)
    if preparing is None:  # made on the event loop, at the first request
        preparing = state.scoring_preparation = anyio.CapacityLimiter(PREPARING)
    return Serving(
        state.settings,
        state.model_cache,
        state.batchers,
        state.observability,
        preparing,
        state.resolver,
    )


ServingDep = Annotated[Serving, Depends(get_serving)]


async def get_event_slots(request: Request) -> Slots:
    """The cap on open job event streams (503 with Retry-After past it)."""
    slots: Slots = request.app.state.event_slots
    return slots


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
ObservabilityDep = Annotated[Observability, Depends(get_observability)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
InferenceSlotsDep = Annotated[Slots, Depends(get_inference_slots)]
EventSlotsDep = Annotated[Slots, Depends(get_event_slots)]
