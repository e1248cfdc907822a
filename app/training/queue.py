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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, String, Update, case, cast, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from app.store.db import rows_changed, write_session
from app.store.tables import Dataset, Job, Metric, Scoring, Worker, new_id, utcnow
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
    started_at: datetime  # the first attempt's start: the job's wall time counts from here
    # The tokenizer of a dataset made before tokenizers, whose folder records none (a word-level
    # kind): checkpoints carry it.
    dataset_tokenizer: str = "whitespace"


CLAIM_WINDOW = 50  # queued jobs looked at per claim for one whose requirements this worker meets


def claim_next(
    engine: Engine, worker_id: str, lease_seconds: float, capabilities: Sequence[str] | None = None
) -> ClaimedJob | None:
    """Claim the oldest queued job for `worker_id` that it can run, or None when there is none.

    A job can run when its `run_after` (backoff) has passed and, if `capabilities` are given, the
    worker has every capability the job requires (a job needing `cuda` waits for a GPU worker).
    """
    now = utcnow()
    with write_session(engine) as session:
        candidate = oldest_claimable(
            session,
            Job,
            Job.requirements,
            lambda required: required or (),
            capabilities,
            or_(Job.run_after.is_(None), Job.run_after <= now),
        )
        if candidate is None:
            return None
        job_id, attempt = candidate
        # started_at stays the first attempt's start: the job's wall time counts from there
        extra = {
            "started_at": func.coalesce(Job.started_at, now),
            "finished_at": None,
            "run_after": None,
            "status_note": None,
        }
        if not claim_row(session, Job, job_id, attempt, worker_id, now + timedelta(seconds=lease_seconds), extra):
            return None  # unreachable under the lock; kept as the guard of last resort
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
            dataset_path=dataset.tokens_path or dataset.path,
            checkpoint_id=resume.id if resume is not None else None,
            checkpoint_path=resume.path if resume is not None else None,
            checkpoint_step=step,
            started_at=job.started_at or now,
            dataset_tokenizer=dataset.tokenizer,
        )


def oldest_claimable(
    session: Session,
    table: type[Job] | type[Scoring],
    requirements_column: Any,
    requirements_of: Callable[[Any], Iterable[str]],
    capabilities: Sequence[str] | None,
    *conditions: Any,
) -> tuple[str, int] | None:
    """(id, attempt) of the oldest queued row of `table` that a worker with `capabilities` can run.

    With `capabilities` (None: no check), the oldest `CLAIM_WINDOW` queued rows are read and the
    first whose requirements (`requirements_of` the value of `requirements_column`) it has is taken.
    """
    rows = session.execute(
        select(table.id, table.attempt, requirements_column)
        .where(table.status == QUEUED, *conditions)
        .order_by(table.created_at, table.id)
        .limit(1 if capabilities is None else CLAIM_WINDOW)
        .with_for_update(skip_locked=True)
    ).all()
    have = set(capabilities or ())
    for row_id, attempt, required in rows:
        if capabilities is None or set(requirements_of(required)) <= have:
            return row_id, attempt
    return None


def claim_row(
    session: Session,
    table: type[Job] | type[Scoring],
    row_id: str,
    attempt: int,
    worker_id: str,
    lease_expires_at: datetime,
    extra: dict[str, Any],
) -> bool:
    """Move a queued row to running under `worker_id`'s lease, as attempt + 1; False if it was not
    queued at that attempt any more."""
    stmt = (
        update(table)
        .where(table.id == row_id, table.status == QUEUED, table.attempt == attempt)
        .values(status=RUNNING, attempt=attempt + 1, worker_id=worker_id, lease_expires_at=lease_expires_at, **extra)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(session, stmt) == 1


def requeue_expired(engine: Engine) -> int:
    """Put jobs whose lease expired (their worker died) back in the queue, in one UPDATE.

    A job canceling when its worker died is canceled; one that has used all its attempts fails
    with the reason. Returns the number of jobs changed.
    """
    with write_session(engine) as session:
        return rows_changed(session, expired_leases(Job))


def requeue_expired_leases(engine: Engine) -> tuple[int, int]:
    """Settle every expired lease, training jobs and scoring jobs, in one transaction: what a worker
    does before it claims and the API's periodic sweep does when no worker may be alive. Returns
    (jobs changed, scorings changed)."""
    with write_session(engine) as session:
        return rows_changed(session, expired_leases(Job)), rows_changed(session, expired_leases(Scoring))


def lease_sweep_interval(lease_seconds: float) -> float:
    """How often the API sweeps expired leases: four times a lease, so that a job whose worker died
    is back in the queue at most a quarter of a lease after its lease ran out."""
    return lease_seconds / 4


def expired_leases(table: type[Job] | type[Scoring]) -> Update:
    """The UPDATE that settles the rows of `table` (jobs or scorings) whose lease expired: canceling
    ones end canceled, those out of attempts fail with the reason, the others are queued again."""
    now = utcnow()
    out_of_attempts = table.attempt >= table.max_attempts
    reason = (
        literal("worker lost (lease expired) on attempt ")
        + cast(table.attempt, String)
        + literal(" of ")
        + cast(table.max_attempts, String)
    )
    return (
        update(table)
        .where(table.status.in_((RUNNING, CANCELING)), table.lease_expires_at < now)
        .values(
            status=case((table.status == CANCELING, CANCELED), (out_of_attempts, FAILED), else_=QUEUED),
            error=case(
                (table.status == CANCELING, table.error),
                (out_of_attempts, reason + literal("; no attempts left")),
                else_=reason + literal("; requeued"),
            ),
            finished_at=case((table.status == CANCELING, now), (out_of_attempts, now), else_=None),
            worker_id=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )


def register_worker(engine: Engine, worker_id: str | None = None, capabilities: Sequence[str] = ()) -> str:
    """Record a starting worker and what it can run (its heartbeat tells /readyz jobs will be picked
    up); returns its id."""
    hostname = socket.gethostname()
    worker_id = worker_id or f"{hostname}-{os.getpid()}-{new_id('w')[2:8]}"
    now = utcnow()
    with write_session(engine) as session:
        session.execute(delete(Worker).where(Worker.heartbeat_at < now - STALE_WORKER_ROWS))
        session.add(
            Worker(
                id=worker_id,
                hostname=hostname,
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=now,
                capabilities=sorted(set(capabilities)),
            )
        )
    return worker_id


def live_capabilities(session: Session, within: timedelta) -> list[set[str]]:
    """The capability sets of the workers that beat within `within` and have not stopped."""
    rows = session.scalars(
        select(Worker.capabilities).where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= utcnow() - within)
    )
    return [set(caps or ()) for caps in rows]


def unmet_requirements(session: Session, requirements: Sequence[str], within: timedelta) -> list[str] | None:
    """What no live worker offers of `requirements` (None when no worker is alive to ask)."""
    if not requirements:
        return []
    return unmet_by(requirements, live_capabilities(session, within))


def unmet_by(requirements: Sequence[str], workers: Sequence[set[str]]) -> list[str] | None:
    """What none of `workers` (their capability sets) offers of `requirements`: [] when one has them
    all, every requirement when each is somewhere but no worker has them together, None when there
    is no worker."""
    if not workers:
        return None
    if any(set(requirements) <= caps for caps in workers):
        return []
    return sorted(set(requirements) - set().union(*workers)) or sorted(requirements)


def waiting_warning(requirements: Sequence[str], workers: Sequence[set[str]], within: timedelta) -> str | None:
    """Why a queued job or scoring will not start soon, given the capability sets of the workers
    that beat within `within` (`live_capabilities`): no such worker at all, or none that offers its
    `requirements`; None when one of them can run it."""
    unmet = unmet_by(requirements, workers)
    seconds = f"{within.total_seconds():g} s"
    if unmet is None:
        return f"no worker has sent a heartbeat in the last {seconds}: it waits in the queue until a worker starts"
    if not unmet:
        return None
    needs = ", ".join(unmet)
    return (
        f"no worker that sent a heartbeat in the last {seconds} offers {needs}: "
        f"it waits in the queue until a worker with {needs} starts"
    )


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
