"""Routes: training jobs (submit, list, get, cancel, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session

from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.schemas import JobCreate, JobOut, JobPage, problem_responses
from app.store.tables import Job
from app.training import jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

PROBLEMS = problem_responses(400, 404, 409, 422)


def job_out(session: Session, job: Job) -> JobOut:
    """The API view of a job, with its queue position and status message."""
    return job_view(job, jobs.queue_position(session, job))


def job_view(job: Job, position: int | None) -> JobOut:
    """The API view of a job whose queue position is known."""
    return JobOut.of(job, position, jobs.status_message(job, position))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=PROBLEMS)
def submit_job(
    body: JobCreate,
    engine: EngineDep,
    settings: SettingsDep,
    session: SessionDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="replaying a key returns the job it created")
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
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(session, jobs.get_job(session, job.id))


@router.get("", response_model=JobPage, responses=PROBLEMS)
def list_jobs(
    session: SessionDep,
    status_filter: Annotated[
        list[str] | None, Query(alias="status", description="only these statuses (repeatable)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobPage:
    """List jobs, newest first, optionally filtered by status."""
    rows, next_cursor = jobs.list_jobs(session, status_filter, limit, cursor)
    positions = jobs.queue_positions(session, rows)
    return JobPage(items=[job_view(job, positions.get(job.id)) for job in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS)
def get_job(job_id: str, session: SessionDep) -> JobOut:
    """A job's status, attempt, progress and perplexities."""
    return job_out(session, jobs.get_job(session, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=PROBLEMS)
def cancel_job(job_id: str, engine: EngineDep, session: SessionDep) -> JobOut:
    """Cancel a queued or running job (idempotent); a running job stops at its next step."""
    jobs.cancel(engine, job_id)
    return job_out(session, jobs.get_job(session, job_id))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
def delete_job(job_id: str, engine: EngineDep, settings: SettingsDep) -> Response:
    """Delete a finished job with its metrics and checkpoints."""
    jobs.delete_job(engine, settings, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
