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
Reads take a `Session`; writes take the `Engine` and run in `write_session`. A `viewer` applies
the ownership rules of `app.auth.ownership`: a job another key owns is `NotFound` (None: no
restriction, for internal callers).
"""

from __future__ import annotations

import hashlib
import shutil
from typing import Any

from sqlalchemy import Engine, delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import ownership, quotas
from app.auth.principal import LOCAL, Principal
from app.errors import Conflict, Invalid, NotFound
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import keyset_page
from app.store.tables import Checkpoint, Dataset, Job, JobLog, Metric, Scoring, new_id, utcnow
from app.training.job_config import build_config, estimate_time
from model.config import ModelConfig

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
    owner: Principal = LOCAL,
) -> tuple[Job, bool]:
    """Validate and queue a job; returns (job, created). A replayed Idempotency-Key returns the original.

    Idempotency keys are per owner: two keys sending the same one get two jobs.
    """
    stored_key = None if idempotency_key is None else _stored_idempotency_key(owner, idempotency_key)
    try:
        with write_session(engine) as session:
            if stored_key is not None and idempotency_key is not None:
                original = _replay(session, stored_key, idempotency_key, dataset_id, preset_name, overrides)
                if original is not None:
                    return original, False
            # FOR SHARE on PostgreSQL: a concurrent delete of the dataset waits for this job.
            dataset = session.get(Dataset, dataset_id, with_for_update={"read": True})
            if dataset is None or dataset.deleted_at is not None or not ownership.may_see_dataset(owner, dataset):
                raise Invalid(f"dataset {dataset_id!r} not found", field="dataset_id")
            quotas.check_queue(session, settings, owner)
            config = build_config(settings, preset_name, overrides, dataset)
            job = Job(
                requirements=requirements(config),
                estimate=estimate_time(config, dataset, settings).as_dict(),
                id=new_id("job"),
                status=QUEUED,
                preset=preset_name,
                overrides=overrides,
                config=config.to_dict(),
                dataset_id=dataset_id,
                idempotency_key=stored_key,
                attempt=0,
                max_attempts=settings.max_attempts,
                progress={},
                owner_id=owner.owner_id,
            )
            session.add(job)
        return job, True
    except IntegrityError:
        # PostgreSQL: a concurrent request with the same key committed first.
        if stored_key is None or idempotency_key is None:
            raise
        with Session(engine) as session:
            original = _replay(session, stored_key, idempotency_key, dataset_id, preset_name, overrides)
        if original is None:
            raise
        return original, False


def requirements(config: ModelConfig) -> list[str]:
    """What a worker must advertise to run `config`: its device, unless it says `auto`, and its
    precision, unless it is fp32 (every device has it)."""
    needs: list[str] = [] if config.device == "auto" else [config.device]
    return needs if config.precision == "fp32" else [*needs, config.precision]


def _stored_idempotency_key(owner: Principal, key: str) -> str:
    """The key as stored: as sent without authentication, else bound to the owner (and hashed to fit)."""
    if owner.owner_id is None:
        return key
    return f"{owner.owner_id}:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _replay(
    session: Session, stored: str, key: str, dataset_id: str, preset_name: str, overrides: dict[str, Any]
) -> Job | None:
    original = session.scalar(select(Job).where(Job.idempotency_key == stored))
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


def _visible_job(job: Job | None, job_id: str, viewer: Principal | None) -> Job:
    if job is None or (viewer is not None and not ownership.may_see(viewer, job.owner_id)):
        raise NotFound(f"job {job_id!r} not found")
    return job


def get_job(session: Session, job_id: str, viewer: Principal | None = None) -> Job:
    """A job by id; `NotFound` when there is none or `viewer` may not see it."""
    return _visible_job(session.get(Job, job_id), job_id, viewer)


def list_jobs(
    session: Session, statuses: list[str] | None, limit: int, cursor: str | None, viewer: Principal | None = None
) -> tuple[list[Job], str | None]:
    """A page of the jobs `viewer` may see, newest first, optionally only some statuses; and the next cursor."""
    stmt = select(Job) if viewer is None else select(Job).where(ownership.visible(viewer, Job.owner_id))
    if statuses:
        unknown = sorted(set(statuses) - set(STATUSES))
        if unknown:
            raise Invalid(f"unknown status {', '.join(unknown)}; choose from {', '.join(STATUSES)}", field="status")
        stmt = stmt.where(Job.status.in_(statuses))
    return keyset_page(session, stmt, Job.created_at, Job.id, limit, cursor)


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs will be claimed before this one (0 = next); None unless queued."""
    return queue_positions(session, [job]).get(job.id)


def queue_positions(session: Session, page: list[Job]) -> dict[str, int]:
    """Queue positions of the queued jobs of one list page, computed once for the whole page.

    Jobs are claimed in (created_at, id) order. One count gives the queued jobs ahead of the page's
    oldest queued job; one range read gives the queued jobs from it to the page's newest (on a page
    that keeps every queued job in its span, those are its own), whose ranks give the rest. Both
    are ranges of the (status, created_at, id) index. A job claimed meanwhile gets no position.
    """
    queued = sorted((job for job in page if job.status == QUEUED), key=lambda job: (job.created_at, job.id))
    if not queued:
        return {}
    oldest, newest = queued[0], queued[-1]
    key = tuple_(Job.created_at, Job.id)
    ahead = session.scalar(
        select(func.count()).select_from(Job).where(Job.status == QUEUED, key < tuple_(oldest.created_at, oldest.id))
    )
    span = session.scalars(
        select(Job.id)
        .where(Job.status == QUEUED, key >= tuple_(oldest.created_at, oldest.id))
        .where(key <= tuple_(newest.created_at, newest.id))
        .order_by(Job.created_at, Job.id)
    )
    on_page = {job.id for job in queued}
    return {job_id: (ahead or 0) + rank for rank, job_id in enumerate(span) if job_id in on_page}


def status_message(job: Job, position: int | None, unmet: list[str] | None = None) -> str:
    """One line on why the job is where it is; `unmet`: what the job needs that no live worker has."""
    if job.status == QUEUED:
        waiting = f"waiting for a worker; {position} job(s) ahead" if position is not None else "waiting for a worker"
        if unmet:
            waiting = f"waiting for a worker with {', '.join(unmet)}: no running worker has it"
        if job.run_after is not None and job.run_after > utcnow():
            waiting += f"; retrying after {job.run_after.isoformat(timespec='seconds')} (backoff)"
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


def cancel(engine: Engine, job_id: str, viewer: Principal | None = None) -> Job:
    """Request cancellation: a queued job is canceled at once, a running one at its next step.

    Idempotent for canceling and canceled jobs; `Conflict` for succeeded or failed ones.
    """
    with write_session(engine) as session:
        job = _visible_job(session.get(Job, job_id, with_for_update=True), job_id, viewer)
        request_cancel(job, f"job {job_id}")
    return job


def request_cancel(row: Job | Scoring, what: str) -> None:
    """The cancel transition of jobs and scorings alike: queued ends canceled at once, running
    becomes canceling (its worker stops at its next step or chunk); canceling and canceled stay;
    `Conflict` once it succeeded or failed."""
    if row.status == QUEUED:
        row.status, row.finished_at = CANCELED, utcnow()
    elif row.status == RUNNING:
        row.status = CANCELING
    elif row.status not in (CANCELING, CANCELED):
        raise Conflict(f"{what} already {row.status}; only queued or running ones can be canceled")


def delete_job(engine: Engine, settings: Settings, job_id: str, viewer: Principal | None = None) -> None:
    """Delete a finished job with its metrics, logs, checkpoints and checkpoint files."""
    with write_session(engine) as session:
        job = _visible_job(session.get(Job, job_id, with_for_update=True), job_id, viewer)
        if job.status not in TERMINAL:
            raise Conflict(f"job {job_id} is {job.status}; cancel it and wait until it is canceled before deleting")
        session.execute(delete(Metric).where(Metric.job_id == job_id))
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        session.execute(delete(JobLog).where(JobLog.job_id == job_id))
        session.delete(job)
    shutil.rmtree(settings.checkpoints_dir / job_id, ignore_errors=True)
