"""Every write a worker makes for one claimed job, conditioned on who owns it.

Each write is `UPDATE jobs ... WHERE id = :id AND attempt = :attempt AND worker_id = :me AND
status IN (running, canceling)`, and inserts of metrics and checkpoints happen in the same
transaction after that UPDATE matched. A worker whose lease expired and whose job was claimed again
(a newer attempt) matches no row: it gets `LeaseLost` and must stop without writing anything else.
Every successful write also renews the lease. Log lines (`app.training.logs`) ride along with
these writes, so a stale attempt cannot add to the job's log either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session

from app.store.db import rows_changed, write_session
from app.store.storage import Storage
from app.store.tables import Checkpoint, Job, Metric, new_id, utcnow
from app.training import checkpoints, logs
from app.training.jobs import ACTIVE, CANCELED, FAILED, QUEUED, SUCCEEDED
from app.training.logs import LogLine
from app.training.sweep import sweep_job_folder


class LeaseLost(Exception):
    """The job is no longer this attempt's (requeued and claimed again, or deleted)."""


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int  # global training step
    epoch: int  # 1-based epoch the point belongs to


@dataclass(frozen=True)
class NewCheckpoint:
    """A checkpoint file already written, to be recorded."""

    id: str
    epoch: int  # completed epochs
    step: int  # global training step
    kind: str  # checkpoints.EPOCH, INTERRUPT or FINAL
    valid_ppl: float | None
    path: str
    size_bytes: int


def new_checkpoint_id() -> str:
    """An id for a checkpoint about to be written (its file is named after it)."""
    return new_id("ckpt")


class Attempt:
    """One claim of one job by one worker: the only way a worker writes to the database."""

    def __init__(
        self, engine: Engine, job_id: str, attempt: int, worker_id: str, lease_seconds: float, storage: Storage
    ) -> None:
        self.engine = engine
        self.storage = storage  # where the job's checkpoint files are
        self.job_id = job_id
        self.attempt = attempt
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds

    def _owned(self) -> Any:
        return (
            (Job.id == self.job_id)
            & (Job.attempt == self.attempt)
            & (Job.worker_id == self.worker_id)
            & Job.status.in_(ACTIVE)
        )

    def _write_job(self, session: Session, **values: Any) -> None:
        """The conditional UPDATE every write starts with; renews the lease unless told otherwise."""
        values.setdefault("lease_expires_at", utcnow() + timedelta(seconds=self.lease_seconds))
        stmt = update(Job).where(self._owned()).values(**values).execution_options(synchronize_session=False)
        if rows_changed(session, stmt) != 1:
            raise LeaseLost(f"job {self.job_id} attempt {self.attempt} is no longer held by {self.worker_id}")

    def _write_logs(self, session: Session, lines: Sequence[LogLine]) -> None:
        logs.write(session, self.job_id, self.attempt, self.worker_id, lines)

    def _status(self, session: Session) -> str:
        return session.scalar(select(Job.status).where(Job.id == self.job_id)) or ""

    def _insert_metrics(self, session: Session, points: list[MetricPoint]) -> None:
        if not points:
            return
        stamp = int(utcnow().timestamp() * 1000)
        session.execute(
            insert(Metric),
            [
                {
                    "job_id": self.job_id,
                    "key": p.key,
                    "value": p.value,
                    "step": p.step,
                    "epoch": p.epoch,
                    "timestamp": stamp,
                    "attempt": self.attempt,
                }
                for p in points
            ],
        )

    def _insert_checkpoint(self, session: Session, ckpt: NewCheckpoint) -> None:
        session.add(
            Checkpoint(
                id=ckpt.id,
                job_id=self.job_id,
                epoch=ckpt.epoch,
                step=ckpt.step,
                kind=ckpt.kind,
                valid_ppl=ckpt.valid_ppl,
                path=ckpt.path,
                size_bytes=ckpt.size_bytes,
                attempt=self.attempt,
                owner_id=session.scalar(select(Job.owner_id).where(Job.id == self.job_id)),
            )
        )

    def status(self) -> str:
        """The job's status (running or canceling) if this attempt still holds it; else `LeaseLost`."""
        with Session(self.engine) as session:
            status = session.scalar(select(Job.status).where(self._owned()))
        if status is None:
            raise LeaseLost(f"job {self.job_id} attempt {self.attempt} is no longer held by {self.worker_id}")
        return status

    def renew(self) -> str:
        """Extend the lease; returns the status, so a heartbeat also notices a cancel request."""
        with write_session(self.engine) as session:
            self._write_job(session)
            return self._status(session)

    def record_vocabulary(self, vocabulary: dict[str, Any]) -> None:
        """Store the vocabulary the job trains with and the `<unk>` rates of its splits."""
        with write_session(self.engine) as session:
            self._write_job(session, vocabulary=vocabulary)

    def log(self, lines: Sequence[LogLine]) -> str:
        """Add lines to the job's log (and renew the lease); returns the status."""
        with write_session(self.engine) as session:
            self._write_job(session)
            self._write_logs(session, lines)
            return self._status(session)

    def report(self, progress: dict[str, Any], points: list[MetricPoint], lines: Sequence[LogLine] = ()) -> str:
        """Store progress, step-level metric points and log lines; returns the status."""
        with write_session(self.engine) as session:
            self._write_job(session, progress=progress)
            self._insert_metrics(session, points)
            self._write_logs(session, lines)
            return self._status(session)

    def record_epoch(
        self,
        ckpt: NewCheckpoint,
        points: list[MetricPoint],
        *,
        train_ppl: float | None,
        valid_ppl: float | None,
        best_valid_ppl: float | None,
        progress: dict[str, Any],
        keep_last: int,
        lines: Sequence[LogLine] = (),
    ) -> str:
        """An epoch's checkpoint, metrics, perplexities and log lines in one transaction; applies retention."""
        with write_session(self.engine) as session:
            self._write_job(
                session,
                progress=progress,
                latest_train_ppl=train_ppl,
                latest_valid_ppl=valid_ppl,
                best_valid_ppl=best_valid_ppl,
            )
            self._insert_checkpoint(session, ckpt)
            self._insert_metrics(session, points)
            self._write_logs(session, lines)
            session.flush()
            pruned = checkpoints.prune(session, self.job_id, keep_last)
            status = self._status(session)
        checkpoints.remove_files(self.storage, pruned)
        return status

    def succeed(
        self,
        test_ppl: float | None,
        final: NewCheckpoint,
        replaces: str | None,
        points: list[MetricPoint],
        progress: dict[str, Any] | None = None,
        lines: Sequence[LogLine] = (),
    ) -> None:
        """Training and the test run are done: the final checkpoint replaces the last epoch's."""
        values: dict[str, Any] = {} if progress is None else {"progress": progress}
        with write_session(self.engine) as session:
            self._write_job(
                session,
                status=SUCCEEDED,
                test_ppl=test_ppl,
                error=None,
                finished_at=utcnow(),
                lease_expires_at=None,
                **values,
            )
            replaced = session.get(Checkpoint, replaces) if replaces else None
            if replaced is not None:
                session.execute(delete(Checkpoint).where(Checkpoint.id == replaced.id))
            self._insert_checkpoint(session, final)
            self._insert_metrics(session, points)
            self._write_logs(session, lines)
        if replaced is not None and replaced.path != final.path:
            checkpoints.remove_files(self.storage, [replaced.path])

    def stop(
        self,
        status: str,
        ckpt: NewCheckpoint | None,
        keep_last: int,
        error: str | None = None,
        lines: Sequence[LogLine] = (),
        retry_in: float | None = None,
        note: str | None = None,
    ) -> None:
        """Leave the job canceled, or queued again (shutdown, transient error), after an optional
        interrupt checkpoint. A clean hand-back (`error` None) is no error: it does not use up one of
        the job's attempts (`max_attempts` grows by one with it) and its `note` says where it stopped
        and where it resumes (the job's `status_note`). `retry_in` holds a requeued job back for that
        many seconds (backoff after a transient error).
        """
        if status not in (CANCELED, QUEUED):
            raise ValueError(f"an attempt stops as canceled or queued, not {status}")
        now = utcnow()
        values: dict[str, Any] = {"status": status, "lease_expires_at": None}
        if status == CANCELED:
            values["finished_at"] = now
        else:
            values["worker_id"] = None
            values["error"] = error
            if error is None:
                values["max_attempts"] = Job.max_attempts + 1
                values["status_note"] = note or f"handed back by worker {self.worker_id} (the worker is stopping)"
            if retry_in:
                values["run_after"] = now + timedelta(seconds=retry_in)
        with write_session(self.engine) as session:
            self._write_job(session, **values)
            self._write_logs(session, lines)
            pruned: list[str] = []
            if ckpt is not None:
                self._insert_checkpoint(session, ckpt)
                session.flush()
                pruned = checkpoints.prune(session, self.job_id, keep_last)
        checkpoints.remove_files(self.storage, pruned)

    def fail(self, error: str, lines: Sequence[LogLine] = ()) -> None:
        """The job cannot succeed (bad corpus, bad checkpoint, or out of attempts)."""
        with write_session(self.engine) as session:
            self._write_job(session, status=FAILED, error=error, finished_at=utcnow(), lease_expires_at=None)
            self._write_logs(session, lines)

    # --- what a resuming attempt cleans up ---

    def checkpoints_newest_first(self) -> list[Checkpoint]:
        """The job's checkpoint rows, the one to resume from first."""
        with Session(self.engine) as session:
            return list(reversed(checkpoints.ordered(session, self.job_id)))

    def forget_checkpoint(self, checkpoint_id: str) -> None:
        """Drop an unusable checkpoint (row and file) and the metric points recorded after the
        checkpoint before it: the run continues from there and records them again."""
        with write_session(self.engine) as session:
            self._write_job(session)
            row = session.get(Checkpoint, checkpoint_id)
            if row is None:
                return
            path = row.path
            session.delete(row)
            session.flush()
            before = checkpoints.latest(session, self.job_id)
            session.execute(
                delete(Metric).where(Metric.job_id == self.job_id, Metric.step > (before.step if before else 0))
            )
        checkpoints.remove_files(self.storage, [path])

    def sweep_folder(self) -> list[str]:
        """Remove what a dead attempt left in the job's folder (unfinished and unrecorded files)."""
        with Session(self.engine) as session:
            return sweep_job_folder(session, self.storage, self.job_id)
