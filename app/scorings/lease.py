"""The scoring queue: claim, lease, attempt-fenced progress, and requeue after a lost worker.

The same rules as the training queue (`app.training.queue`, `app.training.attempt`): a claim is
one conditional UPDATE; every write is `UPDATE scorings ... WHERE id AND attempt AND worker_id AND
status IN (running, canceling)` and renews the lease; a worker whose lease expired and whose
scoring was claimed again matches no row and gets `LeaseLost`. Expired leases are settled with
the training jobs' (`app.training.queue.requeue_expired_leases`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from app.scorings.jobs import requirements
from app.store.db import rows_changed, write_session
from app.store.tables import Scoring, utcnow
from app.training.attempt import LeaseLost
from app.training.jobs import ACTIVE, QUEUED
from app.training.queue import claim_row, oldest_claimable


@dataclass(frozen=True)
class ClaimedScoring:
    """What a worker needs to run (or resume) the scoring it just claimed."""

    id: str
    attempt: int
    checkpoint_path: str
    input_path: str
    options: dict[str, Any]
    total_lines: int
    lines_done: int  # resume here
    bytes_done: int  # the results file holds exactly this many bytes of those lines
    sums: dict[str, Any]


def claim_next_scoring(
    engine: Engine, worker_id: str, lease_seconds: float, capabilities: Sequence[str] | None = None
) -> ClaimedScoring | None:
    """Claim the oldest queued scoring that `worker_id` can run, or None when there is none.

    With `capabilities`, a scoring in bf16 waits for a worker that offers bf16.
    """
    with write_session(engine) as session:
        candidate = oldest_claimable(session, Scoring, Scoring.options, requirements, capabilities)
        if candidate is None:
            return None
        scoring_id, attempt = candidate
        now = utcnow()
        lease = now + timedelta(seconds=lease_seconds)
        if not claim_row(
            session, Scoring, scoring_id, attempt, worker_id, lease, {"started_at": now, "status_note": None}
        ):
            return None
        row = session.get_one(Scoring, scoring_id)
        return ClaimedScoring(
            id=row.id,
            attempt=attempt + 1,
            checkpoint_path=row.checkpoint_path,
            input_path=row.input_path,
            options=dict(row.options),
            total_lines=row.total_lines,
            lines_done=row.lines_done,
            bytes_done=row.bytes_done,
            sums=dict(row.sums),
        )


class ScoringAttempt:
    """One claim of one scoring by one worker: the only way the worker writes it."""

    def __init__(self, engine: Engine, claimed: ClaimedScoring, worker_id: str, lease_seconds: float) -> None:
        self.engine, self.claimed, self.worker_id, self.lease_seconds = engine, claimed, worker_id, lease_seconds

    def _write(self, **values: Any) -> str:
        """The fenced UPDATE; returns the status it found (a cancel request shows as canceling)."""
        owned = (
            (Scoring.id == self.claimed.id)
            & (Scoring.attempt == self.claimed.attempt)
            & (Scoring.worker_id == self.worker_id)
            & Scoring.status.in_(ACTIVE)
        )
        values.setdefault("lease_expires_at", utcnow() + timedelta(seconds=self.lease_seconds))
        with write_session(self.engine) as session:
            stmt = update(Scoring).where(owned).values(**values).execution_options(synchronize_session=False)
            if rows_changed(session, stmt) != 1:
                raise LeaseLost(f"scoring {self.claimed.id} attempt {self.claimed.attempt} is no longer held")
            return str(session.scalar(select(Scoring.status).where(Scoring.id == self.claimed.id)))

    def renew(self) -> str:
        """Extend the lease between chunk records; returns the status."""
        return self._write()

    def progress(self, lines_done: int, bytes_done: int, sums: dict[str, Any]) -> str:
        """Record a chunk written to the results file; returns the status."""
        return self._write(lines_done=lines_done, bytes_done=bytes_done, sums=sums)

    def finish(self, status: str, error: str | None = None, note: str | None = None) -> None:
        """End the scoring: succeeded, canceled, failed, or queued again (a worker shutting down: no
        error, a `note` of where it stopped and resumes)."""
        done = status != QUEUED
        self._write(
            status=status,
            error=error,
            status_note=note,
            worker_id=None,
            lease_expires_at=None,
            finished_at=utcnow() if done else None,
        )
