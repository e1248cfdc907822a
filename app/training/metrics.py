"""Reading a job's metric history: pages in insertion order, a per-key downsampled view for
charts, and the points after a given id for event streams.

Keys written by the worker: at the seed's ten log points per epoch `train_ppl_running`, `wps` and
`lr`; after every epoch `train_ppl`, `valid_ppl`, `lr` and `wps`; at the end `test_ppl`. `step` is
the global training step.
"""

from __future__ import annotations

import re

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.store.tables import Metric

PAGE_TOKEN = re.compile(r"[0-9]{1,18}")  # a metric id, as `history` issues them
KEYS = ("train_ppl", "valid_ppl", "test_ppl", "lr", "wps", "train_ppl_running")


def _filtered(job_id: str, keys: list[str] | None) -> Select[Metric]:
    stmt = select(Metric).where(Metric.job_id == job_id)
    return stmt.where(Metric.key.in_(keys)) if keys else stmt


def decode_page_token(token: str | None) -> int:
    """The metric id a page starts after; `Invalid` for a token this API did not issue."""
    if not token:
        return 0
    if not PAGE_TOKEN.fullmatch(token):
        raise Invalid(f"page_token {token!r} is not valid: pass a previous page's next_page_token", field="page_token")
    return int(token)


def history(
    session: Session, job_id: str, keys: list[str] | None, page_token: str | None, limit: int
) -> tuple[list[Metric], str | None]:
    """A page of points in the order they were recorded, and the next page's token."""
    after = decode_page_token(page_token)
    stmt = _filtered(job_id, keys).where(Metric.id > after).order_by(Metric.id).limit(limit + 1)
    rows = list(session.scalars(stmt))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].id)


def downsampled(session: Session, job_id: str, keys: list[str] | None, max_points: int) -> list[Metric]:
    """At most `max_points` (>= 2) evenly spaced points per key, the first and last always kept, for charts.

    A key with n > m points keeps ranks 0, s, 2s, ... with s = ceil((n - 1) / (m - 1)), plus the
    last rank: at most m points.
    """
    base = _filtered(job_id, keys).subquery()
    ranked = select(
        base.c.id,
        (func.row_number().over(partition_by=base.c.key, order_by=(base.c.step, base.c.id)) - 1).label("rn"),
        func.count().over(partition_by=base.c.key).label("n"),
    ).subquery()
    n, m = ranked.c.n, max_points
    stride = case((n > m, (n + m - 3) // (m - 1)), else_=1)
    keep = select(ranked.c.id).where((n <= m) | (ranked.c.rn % stride == 0) | (ranked.c.rn == n - 1))
    stmt = select(Metric).where(Metric.id.in_(keep)).order_by(Metric.key, Metric.step, Metric.id)
    return list(session.scalars(stmt))


def after(session: Session, job_id: str, after_id: int, limit: int) -> list[Metric]:
    """Points recorded after metric id `after_id`, oldest first (for event streams)."""
    stmt = select(Metric).where(Metric.job_id == job_id, Metric.id > after_id).order_by(Metric.id).limit(limit)
    return list(session.scalars(stmt))


def last_id(session: Session, job_id: str) -> int:
    """The id of the job's latest point (0 when it has none): where a stream without history starts."""
    return session.scalar(select(func.max(Metric.id)).where(Metric.job_id == job_id)) or 0
