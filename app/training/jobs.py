r"""Jobs as the API sees them: submit, read, list, cancel and delete.

States::

    queued --claim--> running --fit done--> succeeded
      |                 |   \--error------> failed      (or back to queued while attempts remain)
      |                 |    \--SIGTERM---> queued      (resumes from its interrupt checkpoint)
      |                 |     \--lease expired--> queued, or failed after max_attempts
      |               cancel
      |                 v
      |             canceling --next step boundary--> canceled (keeps its checkpoints)
      \--cancel--> canceled

The worker's side (claim, lease, conditional writes) is in `app.training.queue` and `app.training.attempt`.
Reads take a `Session`; writes take the `Engine` and run in `write_session`.
"""

from __future__ import annotations

import shutil
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, NotFound
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import keyset_page
from app.store.tables import Checkpoint, Dataset, Job, Metric, new_id, utcnow
from app.training.job_config import build_config

QUEUED, RUNNING, CANCELING = "queued", "running", "canceling"
SUCCEEDED, FAILED, CANCELED = "succeeded", "failed", "canceled"
STATUSES = (QUEUED, RUNNING, CANCELING, SUCCEEDED, FAILED, CANCELED)
ACTIVE = (RUNNING, CANCELING)  # a worker holds the job
TERMINAL = (SUCCEEDED, FAILED, CANCELED)


def submit(
    engine: Engine,
    settings: Settings,
    *,
    dataset_id: str,
    preset_name: str,
    overrides: dict[str, Any],
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Validate and queue a job; returns (job, created). A replayed Idempotency-Key returns the original."""
    try:
        with write_session(engine) as session:
            if idempotency_key is not None:
                original = _replay(session, idempotency_key, dataset_id, preset_name, overrides)
                if original is not None:
                    return original, False
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                raise Invalid(f"dataset {dataset_id!r} not found", field="dataset_id")
            config = build_config(settings, preset_name, overrides, dataset)
            job = Job(
                id=new_id("job"),
                status=QUEUED,
                preset=preset_name,
                overrides=overrides,
                config=config.to_dict(),
                dataset_id=dataset_id,
                idempotency_key=idempotency_key,
                attempt=0,
                max_attempts=settings.max_attempts,
                progress={},
            )
            session.add(job)
        return job, True
    except IntegrityError:
        # PostgreSQL: a concurrent request with the same key committed first.
        if idempotency_key is None:
            raise
        with Session(engine) as session:
            original = _replay(session, idempotency_key, dataset_id, preset_name, overrides)
        if original is None:
            raise
        return original, False


def _replay(session: Session, key: str, dataset_id: str, preset_name: str, overrides: dict[str, Any]) -> Job | None:
    original = session.scalar(select(Job).where(Job.idempotency_key == key))
    if original is None:
        return None
    if (original.dataset_id, original.preset, original.overrides) != (dataset_id, preset_name, overrides):
        raise Invalid(
            f"Idempotency-Key {key!r} was already used for a different request (job {original.id})",
            field="Idempotency-Key",
            job_id=original.id,
        )
    return original


def training_precision(job: Job) -> str:
    """The precision a job trains (and trained its checkpoints) in; configs from before the field are fp32."""
    return str(job.config.get("precision", "fp32"))


def get_job(session: Session, job_id: str) -> Job:
    """A job by id; `NotFound` otherwise."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    return job


def list_jobs(
    session: Session, statuses: list[str] | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """A page of jobs, newest first, optionally only some statuses; and the next page's cursor."""
    stmt = select(Job)
    if statuses:
        unknown = sorted(set(statuses) - set(STATUSES))
        if unknown:
            raise Invalid(f"unknown status {', '.join(unknown)}; choose from {', '.join(STATUSES)}", field="status")
        stmt = stmt.where(Job.status.in_(statuses))
    return keyset_page(session, stmt, Job.created_at, Job.id, limit, cursor)


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs will be claimed before this one (0 = next); None unless queued."""
    if job.status != QUEUED:
        return None
    ahead = or_(Job.created_at < job.created_at, and_(Job.created_at == job.created_at, Job.id < job.id))
    return session.scalar(select(func.count()).select_from(Job).where(Job.status == QUEUED, ahead)) or 0


def status_message(job: Job, position: int | None) -> str:
    """One line on why the job is where it is."""
    if job.status == QUEUED:
        waiting = f"waiting for a worker; {position} job(s) ahead" if position is not None else "waiting for a worker"
        return f"{waiting} (previous attempt: {job.error})" if job.attempt and job.error else waiting
    if job.status == RUNNING:
        return f"attempt {job.attempt} of {job.max_attempts} running on worker {job.worker_id}"
    if job.status == CANCELING:
        return "cancel requested; the worker stops at the next step boundary"
    if job.status == SUCCEEDED:
        return "finished"
    if job.status == CANCELED:
        return "canceled on request"
    return job.error or "failed"


def cancel(engine: Engine, job_id: str) -> Job:
    """Request cancellation: a queued job is canceled at once, a running one at its next step.

    Idempotent for canceling and canceled jobs; `Conflict` for succeeded or failed ones.
    """
    with write_session(engine) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        if job.status == QUEUED:
            job.status, job.finished_at = CANCELED, utcnow()
        elif job.status == RUNNING:
            job.status = CANCELING
        elif job.status not in (CANCELING, CANCELED):
            raise Conflict(f"job {job_id} already {job.status}; only queued or running jobs can be canceled")
    return job


def delete_job(engine: Engine, settings: Settings, job_id: str) -> None:
    """Delete a finished job with its metrics, checkpoints and checkpoint files."""
    with write_session(engine) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        if job.status not in TERMINAL:
            raise Conflict(f"job {job_id} is {job.status}; cancel it and wait until it is canceled before deleting")
        session.execute(delete(Metric).where(Metric.job_id == job_id))
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        session.delete(job)
    shutil.rmtree(settings.checkpoints_dir / job_id, ignore_errors=True)
