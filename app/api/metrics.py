"""Routes: a job's metric history (MLflow's shape) and its live event stream (Server-Sent Events)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import EngineDep, EventSlotsDep, SessionDep, SettingsDep
from app.api.jobs import job_out
from app.api.schemas import MetricOut, MetricPage, problem_responses
from app.api.streams import Polled, job_polled, polled_events, resume_after
from app.auth import ownership
from app.auth.principal import Principal
from app.errors import Invalid, NotFound
from app.store.tables import Job, Metric
from app.training import jobs, metrics

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["metrics"], responses=AUTH_RESPONSES)

PROBLEMS = problem_responses(404, 422)
EVENT_BATCH = 500  # metric points sent per database read


def metric_out(row: Metric) -> MetricOut:
    return MetricOut(key=row.key, value=row.value, step=row.step, timestamp=row.timestamp)


@router.get("/metrics", response_model=MetricPage, responses=PROBLEMS)
def get_metrics(
    job_id: str,
    principal: ReadKey,
    session: SessionDep,
    key: Annotated[
        list[str] | None,
        Query(
            description=f"only these keys (repeatable): {', '.join(metrics.KEYS)}",
            json_schema_extra={"items": {"enum": list(metrics.KEYS)}},
        ),
    ] = None,
    page_token: Annotated[
        str | None,
        Query(
            description="next_page_token of the previous page: a metric id",
            json_schema_extra={"pattern": r"^([0-9]{1,18})?$"},
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    max_points: Annotated[
        int | None, Query(ge=2, le=10_000, description="downsample: at most this many points per key, one page")
    ] = None,
) -> MetricPage:
    """A job's metric history: {key, value, step, timestamp} points, paged or downsampled for charts."""
    unknown = sorted(set(key or ()) - set(metrics.KEYS))
    if unknown:
        shown = ", ".join(repr(k[:50]) for k in unknown[:5])
        raise Invalid(
            f"unknown metric key {shown}; the keys are {', '.join(metrics.KEYS)}", field="key", keys=list(metrics.KEYS)
        )
    jobs.get_job(session, job_id, principal)
    if max_points is not None:
        rows = metrics.downsampled(session, job_id, key, max_points)
        return MetricPage(metrics=[metric_out(r) for r in rows], next_page_token=None)
    rows, token = metrics.history(session, job_id, key, page_token, limit)
    return MetricPage(metrics=[metric_out(r) for r in rows], next_page_token=token)


def _start(engine: Engine, job_id: str, history: bool, viewer: Principal) -> int | None:
    """The metric id a stream starts after (0: the whole history); None when the viewer sees no such job."""
    with Session(engine) as session:
        job = session.get(Job, job_id)
        if job is None or not ownership.may_see(viewer, job.owner_id):
            return None
        return 0 if history else metrics.last_id(session, job_id)


def _poll(engine: Engine, job_id: str, after_id: int) -> tuple[dict[str, Any] | None, list[Metric]]:
    """The job (as the API shows it) and its metric points after `after_id`; (None, []) if it is gone."""
    with Session(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None, []
        points = metrics.after(session, job_id, after_id, EVENT_BATCH)
        return job_out(session, job).model_dump(mode="json"), points


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **PROBLEMS, **problem_responses(503)},
)
async def job_events(
    job_id: str,
    principal: ReadKey,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    slots: EventSlotsDep,
    last_event_id: Annotated[
        str | None, Header(max_length=200, description="resume after this metric event id")
    ] = None,
    history: Annotated[
        bool, Query(description="false: only points recorded after the stream opens (the history read elsewhere)")
    ] = True,
) -> EventSourceResponse:
    """Stream `status` and `metric` events until the job ends, then an `end` event."""
    first = await anyio.to_thread.run_sync(_start, engine, job_id, history, principal)
    if first is None:
        raise NotFound(f"job {job_id!r} not found")
    resumed = resume_after(last_event_id)
    after_id = first if resumed is None else resumed
    last_status: dict[str, Any] | None = None

    def poll() -> Polled:
        nonlocal after_id, last_status
        job, points = _poll(engine, job_id, after_id)
        if points:
            after_id = points[-1].id
        events = [{"event": "metric", "id": str(row.id), "data": metric_out(row).model_dump_json()} for row in points]
        if job is not None and job != last_status:
            last_status = job
            events.append({"event": "status", "data": json.dumps(job)})
        status = None if job is None else job["status"]
        return job_polled(job_id, status, events, full_batch=len(points) == EVENT_BATCH)  # full: more history waits

    return polled_events(request, poll, settings.events_poll_seconds, slots.acquire())
