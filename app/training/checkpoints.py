"""Checkpoint records: listing with the best one marked, retention, and file lookup.

Files are stored (`app.store.storage`) as `checkpoints/<job id>/<checkpoint id>.pt`; a row keeps
its key (rows from before keys, its absolute path). The
best checkpoint is the one with the lowest validation perplexity (the earliest on a tie).
Retention keeps the best and the last N of a job and deletes the rest, rows first, files after
the transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.store.storage import MissingObject, Storage, join
from app.store.tables import Checkpoint

EPOCH, INTERRUPT, FINAL = "epoch", "interrupt", "final"
CHECKPOINTS = "checkpoints"


def ordered(session: Session, job_id: str) -> list[Checkpoint]:
    """A job's checkpoints, oldest first (by training step, then creation)."""
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return list(session.scalars(stmt.order_by(Checkpoint.step, Checkpoint.created_at, Checkpoint.id)))


def best_of(checkpoints: Iterable[Checkpoint]) -> Checkpoint | None:
    """The checkpoint with the lowest validation perplexity; the earliest wins a tie."""
    scored = [c for c in checkpoints if c.valid_ppl is not None]
    return min(scored, key=lambda c: c.valid_ppl or 0.0) if scored else None


def latest(session: Session, job_id: str) -> Checkpoint | None:
    """The checkpoint a new attempt resumes from: the furthest in training."""
    stmt = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return session.scalars(stmt.order_by(Checkpoint.step.desc(), Checkpoint.created_at.desc()).limit(1)).first()


def prune(session: Session, job_id: str, keep_last: int) -> list[str]:
    """Delete all but the best and the last `keep_last` checkpoints; returns the files to remove."""
    rows = ordered(session, job_id)
    best = best_of(rows)
    keep = {c.id for c in rows[-keep_last:]} | ({best.id} if best else set())
    doomed = [c for c in rows if c.id not in keep]
    if doomed:
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_([c.id for c in doomed])))
    return [c.path for c in doomed]


def job_key(job_id: str) -> str:
    """Where a job's checkpoints are stored."""
    return join(CHECKPOINTS, job_id)


def checkpoint_key(job_id: str, checkpoint_id: str) -> str:
    return join(job_key(job_id), f"{checkpoint_id}.pt")


def remove_files(storage: Storage, keys: Iterable[str]) -> None:
    """Delete checkpoint files whose rows are gone; a missing file is fine."""
    for key in keys:
        storage.delete(key)


def get_checkpoint(session: Session, job_id: str, checkpoint_id: str) -> Checkpoint:
    """One checkpoint of a job; `NotFound` otherwise."""
    row = session.get(Checkpoint, checkpoint_id)
    if row is None or row.job_id != job_id:
        raise NotFound(f"checkpoint {checkpoint_id!r} of job {job_id!r} not found")
    return row


def open_file(storage: Storage, row: Checkpoint) -> tuple[int, Iterator[bytes]]:
    """The size and bytes of a checkpoint row's file; `NotFound` when it is missing."""
    try:
        return storage.open(row.path)
    except (MissingObject, ValueError):  # ValueError: a row that names no stored file
        raise NotFound(f"the file of checkpoint {row.id} is missing") from None
