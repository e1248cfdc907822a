"""A job's log: structured lines (time, level, attempt, worker, message) written by the worker that
holds the job, read in pages or followed as they come.

Lines are written inside the attempt's conditioned writes (`app.training.attempt`), so a worker
that lost its job cannot add to its log. A job keeps its last `MAX_LINES_PER_JOB` lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.store.pagination import row_id_after
from app.store.tables import JobLog, utcnow

INFO, WARNING, ERROR = "INFO", "WARNING", "ERROR"
MAX_LINES_PER_JOB = 5000


@dataclass(frozen=True)
class LogLine:
    """A line to be written; stamped when it is made, not when it is stored."""

    level: str
    message: str
    time: datetime = field(default_factory=utcnow)


def info(message: str) -> LogLine:
    return LogLine(INFO, message)


def warning(message: str) -> LogLine:
    return LogLine(WARNING, message)


def error(message: str) -> LogLine:
    return LogLine(ERROR, message)


def write(session: Session, job_id: str, attempt: int, worker_id: str, lines: Sequence[LogLine]) -> None:
    """Insert `lines` and drop the job's oldest lines beyond `MAX_LINES_PER_JOB` (one indexed look-up)."""
    if not lines:
        return
    session.execute(
        insert(JobLog),
        [
            {
                "job_id": job_id,
                "attempt": attempt,
                "worker_id": worker_id,
                "level": line.level,
                "message": line.message,
                "created_at": line.time,
            }
            for line in lines
        ],
    )
    oldest_kept = session.scalar(
        select(JobLog.id)
        .where(JobLog.job_id == job_id)
        .order_by(JobLog.id.desc())
        .offset(MAX_LINES_PER_JOB - 1)
        .limit(1)
    )
    if oldest_kept is not None:
        session.execute(delete(JobLog).where(JobLog.job_id == job_id, JobLog.id < oldest_kept))


def decode_cursor(cursor: str | None) -> int:
    """The line id a page starts after; `Invalid` for a cursor this API did not issue."""
    if not cursor:
        return 0
    after_id = row_id_after(cursor)
    if after_id is None:
        raise Invalid(f"cursor {cursor[:100]!r} is not valid: pass a previous page's next_cursor", field="cursor")
    return after_id


def page(session: Session, job_id: str, cursor: str | None, limit: int) -> tuple[list[JobLog], str | None]:
    """A page of lines, oldest first, and the next page's cursor (None when no more lines are stored yet)."""
    rows = after(session, job_id, decode_cursor(cursor), limit + 1)
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].id)


def after(session: Session, job_id: str, after_id: int, limit: int) -> list[JobLog]:
    """Lines written after line id `after_id`, oldest first (for pages and followers)."""
    stmt = select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id).order_by(JobLog.id).limit(limit)
    return list(session.scalars(stmt))
