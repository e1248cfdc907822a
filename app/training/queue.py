"""The queue from a worker's side: claim a job under a lease, put expired leases back, worker rows.

Claiming is one code path for SQLite and PostgreSQL, inside `write_session`: select the oldest
queued job `FOR UPDATE SKIP LOCKED` (PostgreSQL locks the row and other claimers skip it; SQLite
ignores the clause and `BEGIN IMMEDIATE` serialises the whole transaction), then move it to
running with `attempt + 1` in an UPDATE that is still conditioned on the job being queued at that
attempt. Two workers can never both win a job.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, String, case, cast, delete, func, literal, select, update

from app.store.db import rows_changed, write_session
from app.store.tables import Dataset, Job, Metric, Worker, new_id, utcnow
from app.training.checkpoints import latest
from app.training.jobs import CANCELED, CANCELING, FAILED, QUEUED, RUNNING

STALE_WORKER_ROWS = timedelta(days=1)  # stopped or silent worker rows older than this are removed


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to run the job it just claimed."""

    id: str
    attempt: int
    max_attempts: int
    config: dict[str, Any]
    dataset_path: str
    checkpoint_id: str | None  # resume from this checkpoint, None = start fresh
    checkpoint_path: str | None
    checkpoint_step: int  # global training step of that checkpoint (0 = none)
    dataset_convention: str = "plain"  # how the corpus' text is tokenized; checkpoints carry it


def claim_next(engine: Engine, worker_id: str, lease_seconds: float) -> ClaimedJob | None:
    """Claim the oldest queued job for `worker_id`, or None when the queue is empty."""
    with write_session(engine) as session:
        candidate = session.execute(
            select(Job.id, Job.attempt)
            .where(Job.status == QUEUED)
            .order_by(Job.created_at, Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if candidate is None:
            return None
        job_id, attempt = candidate
        now = utcnow()
        won = rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == QUEUED, Job.attempt == attempt)
            .values(
                status=RUNNING,
                attempt=attempt + 1,
                worker_id=worker_id,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=func.coalesce(Job.started_at, now),  # the first attempt's start
                finished_at=None,
            )
            .execution_options(synchronize_session=False),
        )
        if won != 1:  # unreachable under the lock; kept as the guard of last resort
            return None
        job = session.get_one(Job, job_id)
        dataset = session.get_one(Dataset, job.dataset_id)
        resume = latest(session, job_id)
        step = resume.step if resume is not None else 0
        # A lost attempt may have logged past its last checkpoint; this attempt recomputes those
        # steps identically, so drop them to keep one history.
        session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step > step))
        session.execute(update(Worker).where(Worker.id == worker_id).values(current_job_id=job_id, heartbeat_at=now))
        return ClaimedJob(
            id=job_id,
            attempt=attempt + 1,
            max_attempts=job.max_attempts,
            config=dict(job.config),
            dataset_path=dataset.path,
            checkpoint_id=resume.id if resume is not None else None,
            checkpoint_path=resume.path if resume is not None else None,
            checkpoint_step=step,
            dataset_convention=dataset.convention,
        )


def requeue_expired(engine: Engine) -> int:
    """Put jobs whose lease expired (their worker died) back in the queue, in one UPDATE.

    A job canceling when its worker died is canceled; one that has used all its attempts fails
    with the reason. Returns the number of jobs changed.
    """
    now = utcnow()
    out_of_attempts = Job.attempt >= Job.max_attempts
    reason = (
        literal("worker lost (lease expired) on attempt ")
        + cast(Job.attempt, String)
        + literal(" of ")
        + cast(Job.max_attempts, String)
    )
    with write_session(engine) as session:
        return rows_changed(
            session,
            update(Job)
            .where(Job.status.in_((RUNNING, CANCELING)), Job.lease_expires_at < now)
            .values(
                status=case(
                    (Job.status == CANCELING, CANCELED),
                    (out_of_attempts, FAILED),
                    else_=QUEUED,
                ),
                error=case(
                    (Job.status == CANCELING, Job.error),
                    (out_of_attempts, reason + literal("; no attempts left")),
                    else_=reason + literal("; requeued"),
                ),
                finished_at=case((Job.status == CANCELING, now), (out_of_attempts, now), else_=None),
                worker_id=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False),
        )


def register_worker(engine: Engine, worker_id: str | None = None) -> str:
    """Record a starting worker (its heartbeat tells /readyz jobs will be picked up); returns its id."""
    hostname = socket.gethostname()
    worker_id = worker_id or f"{hostname}-{os.getpid()}-{new_id('w')[2:8]}"
    now = utcnow()
    with write_session(engine) as session:
        session.execute(delete(Worker).where(Worker.heartbeat_at < now - STALE_WORKER_ROWS))
        session.add(Worker(id=worker_id, hostname=hostname, pid=os.getpid(), started_at=now, heartbeat_at=now))
    return worker_id


def worker_heartbeat(engine: Engine, worker_id: str, current_job_id: str | None) -> None:
    """A worker is alive (and, when given, working on `current_job_id`)."""
    with write_session(engine) as session:
        session.execute(
            update(Worker).where(Worker.id == worker_id).values(heartbeat_at=utcnow(), current_job_id=current_job_id)
        )


def worker_stopped(engine: Engine, worker_id: str) -> None:
    """A worker exits cleanly."""
    with write_session(engine) as session:
        session.execute(update(Worker).where(Worker.id == worker_id).values(stopped_at=utcnow(), current_job_id=None))
