"""Routes: training jobs (estimate, submit, list, get, edit, cancel, delete)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session

from app.api.auth import AUTH_RESPONSES, ReadKey, WriteKey
from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.schemas import (
    JobCreate,
    JobEstimateOut,
    JobOut,
    JobPage,
    PageCursor,
    PageLimit,
    RunMetadataPatch,
    problem_responses,
)
from app.errors import Invalid
from app.store.tables import Dataset, Job
from app.training import jobs
from app.training.datasets import find_dataset
from app.training.queue import live_capabilities, unmet_by, waiting_warning
from app.training.run_metadata import MAX_NAME, MAX_TAGS, TAG_PATTERN

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTH_RESPONSES)

PROBLEMS = problem_responses(400, 404, 409, 413, 422)
SUBMIT_PROBLEMS = problem_responses(400, 404, 409, 413, 422, 429)
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"  # visible ASCII: no spaces, no control or non-ASCII characters


LIVE_WORKERS = jobs.LIVE_WORKERS  # a worker that beat this recently counts as running
JobSort = Literal["-created_at", "created_at", "valid_ppl", "test_ppl"]
PresetName = Literal["small", "medium", "large", "test"]  # model.config.PRESETS


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
        metadata=body.metadata(),
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(session, jobs.get_job(session, job.id))


@router.post("/estimate", response_model=JobEstimateOut, responses=PROBLEMS)
def estimate_job(body: JobCreate, principal: WriteKey, session: SessionDep, settings: SettingsDep) -> JobEstimateOut:
    """What a submission of this body would train and cost, and whether it fits the server's job
    limit; nothing is stored. Write scope, as submission: it answers "what would my submission
    be", with the same dataset visibility and the same refusals (an invalid config is a 422 here
    too); a job past the time limit is a 200 with `fits` false and the reason."""
    dataset = find_dataset(session, body.dataset_id, principal, missing=Invalid)
    found = jobs.plan(session, settings, dataset, body.preset, body.overrides)
    try:
        jobs.check_job_time(settings, found)
        problem = None
    except Invalid as exc:
        problem = exc.detail
    timing = found.timing
    return JobEstimateOut(
        dataset_id=dataset.id,
        preset=body.preset,
        config=found.config.to_dict(),
        parameters=found.parameters,
        vocab_size=found.vocab_size,
        train_memory_bytes=found.train_memory_bytes,
        steps_per_epoch=timing.steps_per_epoch,
        step_seconds=round(timing.step_seconds, 6),
        epoch_seconds=round(timing.epoch_seconds, 3),
        test_seconds=round(timing.test_seconds, 3),
        load_seconds=round(timing.load_seconds, 3),
        total_seconds=round(timing.total_seconds, 3),
        device=timing.device,
        basis=found.basis,
        fits=problem is None,
        limit_seconds=settings.max_job_seconds,
        problem=problem,
    )


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
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_NAME,
            description="a case-insensitive part of the job's name, or exactly its id",
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_TAGS,
            description="only jobs with every one of these tags (repeatable)",
            json_schema_extra={"items": {"type": "string", "pattern": TAG_PATTERN}},
        ),
    ] = None,
    dataset_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_NAME,
            description="only jobs on this dataset: its id, or the name of exactly one dataset this key can see",
        ),
    ] = None,
    preset: Annotated[PresetName | None, Query(description="only jobs of this preset")] = None,
    sort: Annotated[
        JobSort,
        Query(
            description="-created_at: newest first (the default); created_at: oldest first; valid_ppl, test_ppl: "
            "the best validation or the test perplexity, lowest first, jobs without one last. A cursor "
            "continues the sort it came from"
        ),
    ] = "-created_at",
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> JobPage:
    """List this key's jobs (every job for an admin), filtered and sorted; newest first by default."""
    rows, next_cursor = jobs.list_jobs(
        session,
        status_filter,
        limit,
        cursor,
        principal,
        q=q,
        tags=tag,
        dataset=dataset_id,
        preset_name=preset,
        sort=sort,
    )
    positions = jobs.queue_positions(session, rows)
    return JobPage(items=[job_view(session, job, positions.get(job.id)) for job in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=PROBLEMS)
def get_job(job_id: str, principal: ReadKey, session: SessionDep) -> JobOut:
    """A job's status, attempt, progress and perplexities."""
    return job_out(session, jobs.get_job(session, job_id, principal))


@router.patch("/{job_id}", response_model=JobOut, responses=PROBLEMS)
def edit_job(
    job_id: str, body: RunMetadataPatch, principal: WriteKey, engine: EngineDep, session: SessionDep
) -> JobOut:
    """Change a job's name, tags or notes: only the fields sent change (null clears one), in any status."""
    jobs.update_metadata(engine, job_id, body.changes(), principal)
    return job_out(session, jobs.get_job(session, job_id))


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
