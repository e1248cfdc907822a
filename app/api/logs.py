"""Route: a job's log lines, in pages or followed as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import EngineDep, EventSlotsDep, SettingsDep
from app.api.schemas import LogLineOut, LogPage, problem_responses
from app.api.streams import EVENT_ID_SCHEMA, Polled, job_polled, polled_events, resume_after
from app.auth.principal import Principal
from app.store.tables import Job, JobLog
from app.training import jobs, logs

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["logs"])

FOLLOW_BATCH = 500  # lines sent per database read when following


def line_out(row: JobLog) -> LogLineOut:
    return LogLineOut(
        id=row.id,
        time=row.created_at,
        level=row.level,
        attempt=row.attempt,
        worker_id=row.worker_id,
        message=row.message,
    )


def _page(engine: Engine, job_id: str, cursor: str | None, limit: int, viewer: Principal) -> LogPage:
    with Session(engine) as session:
        jobs.get_job(session, job_id, viewer)
        rows, next_cursor = logs.page(session, job_id, cursor, limit)
        return LogPage(items=[line_out(r) for r in rows], next_cursor=next_cursor)


def _lines_after(engine: Engine, job_id: str, after_id: int) -> tuple[str | None, list[JobLog]]:
    """The job's status and its lines after `after_id`; (None, []) once the job is gone."""
    with Session(engine) as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status is None:
            return None, []
        return status, logs.after(session, job_id, after_id, FOLLOW_BATCH)


@router.get(
    "/logs",
    response_model=LogPage,
    responses={
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
        **problem_responses(404, 422),
        **AUTH_RESPONSES,
    },
)
async def job_logs(
    job_id: str,
    principal: ReadKey,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    slots: EventSlotsDep,
    cursor: Annotated[
        str | None,
        Query(
            max_length=18,
            description="next_cursor of the previous page: a line id",
            json_schema_extra=EVENT_ID_SCHEMA,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    follow: Annotated[
        bool, Query(description="stream the lines (from `cursor` on) and new ones as Server-Sent Events")
    ] = False,
    last_event_id: Annotated[  # a header is never null: empty or left out is no id
        str, Header(description="following: resume after this line id", json_schema_extra=EVENT_ID_SCHEMA)
    ] = "",
) -> Response:
    """A job's log lines, oldest first, paged; `follow=true` streams them as `log` events until the job ends."""
    resumed = resume_after(last_event_id)  # refused when malformed, following or not: the document states it
    page = await anyio.to_thread.run_sync(_page, engine, job_id, cursor, limit, principal)
    if not follow:
        return Response(page.model_dump_json(), media_type="application/json")
    after_id = logs.decode_cursor(cursor) if resumed is None else resumed

    def poll() -> Polled:
        nonlocal after_id
        status, rows = _lines_after(engine, job_id, after_id)
        if rows:
            after_id = rows[-1].id
        events = [{"event": "log", "id": str(row.id), "data": line_out(row).model_dump_json()} for row in rows]
        return job_polled(job_id, status, events, full_batch=len(rows) == FOLLOW_BATCH)

    return polled_events(request, poll, settings.events_poll_seconds, slots.acquire())
