"""Routes: training jobs (submit, list, get, cancel, delete)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session

from app.api.auth import AUTH_RESPONSES, ReadKey, WriteKey
from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.schemas import JobCreate, JobOut, JobPage, PageCursor, PageLimit, problem_responses
from app.store.tables import Dataset, Job
from app.training import jobs
from app.training.queue import live_capabilities, unmet_by, waiting_warning

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTH_RESPONSES)

PROBLEMS = problem_responses(400, 404, 409, 413, 422)
SUBMIT_PROBLEMS = problem_responses(400, 404, 409, 413, 422, 429)
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"  # visible ASCII: no spaces, no control or non-ASCII characters


LIVE_WORKERS = timedelta(minutes=2)  # a worker that beat this recently counts as running


def job_out(session: Session, job: Job) -> JobOut:
    """The API view of a job, with its queue position and status message."""
    return job_view(session, job, jobs.queue_position(session, job))


def job_view(session: Session, job: Job, position: int | None) -> JobOut:
    """The API view of a job whose queue position is known; a queued job says what it waits for, and
    warns when no live worker can run it."""
    unmet: list[str] | None = []
    warning = None
    if job.status == jobs.QUEUED:
        needs, workers = job.requirements or [], live_capabilities(session, LIVE_WORKERS)
        unmet, warning = unmet_by(needs, workers), waiting_warning(needs, workers, LIVE_WORKERS)
    message = jobs.status_message(job, position, unmet)
    return JobOut.of(job, position, message, session.get(Dataset, job.dataset_id), warning)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "an Idempotency-Key replay: the job it created"},
        **SUBMIT_PROBLEMS,
    },
)
def submit_job(
    body: JobCreate,
    principal: WriteKey,
    engine: EngineDep,
    settings: SettingsDep,
    session: SessionDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            pattern=IDEMPOTENCY_KEY,
            description="1-200 visible ASCII characters; replaying a key returns the job it created",
        ),
    ] = None,
) -> JobOut:
    """Queue a training job; a replayed Idempotency-Key returns the original job (200)."""
    job, created = jobs.submit(
        engine,
        settings,
        dataset_id=body.dataset_id,
        preset_name=body.preset,
        overrides=body.overrides,
        idempotency_key=idempotency_key,
        owner=principal,
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(session, jobs.get_job(session, job.id))


@router.get("", response_model=JobPage, responses=PROBLEMS)
def list_jobs(
    principal: ReadKey,
    session: SessionDep,
    status_filter: Annotated[
        list[str] | None,
        Query(
            alias="status",
            description="only these statuses (repeatable)",
            json_schema_extra={"items": {"enum": list(jobs.STATUSES)}},
        ),
    ] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> JobPage:
    """List this key's jobs (every job for an admin), newest first, optionally filtered by status."""
    rows, next_cursor = jobs.list_jobs(session, status_filter, limit, cursor, principal)
    positions = jobs.queue_positions(session, rows)
    return JobPage(items=[job_view(session, job, positions.get(job.id)) for job in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS)
def get_job(job_id: str, principal: ReadKey, session: SessionDep) -> JobOut:
    """A job's status, attempt, progress and perplexities."""
    return job_out(session, jobs.get_job(session, job_id, principal))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=PROBLEMS)
def cancel_job(job_id: str, principal: WriteKey, engine: EngineDep, session: SessionDep) -> JobOut:
    """Cancel a queued or running job (idempotent); a running job stops at its next step."""
    jobs.cancel(engine, job_id, principal)
    return job_out(session, jobs.get_job(session, job_id))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
def delete_job(job_id: str, principal: WriteKey, engine: EngineDep, settings: SettingsDep) -> Response:
    """Delete a finished job with its metrics and checkpoints."""
    jobs.delete_job(engine, settings, job_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
