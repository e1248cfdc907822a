"""Reading a job's metric history: pages in insertion order, a per-key downsampled view for
charts, and the points after a given id for event streams.

Keys written by the worker: at the seed's ten log points per epoch `train_ppl_running`, `wps` and
`lr`; after every epoch `train_ppl`, `valid_ppl`, `lr` and `wps`; at the end `test_ppl`. `step` is
the global training step; a job has at most one point per key and step (a unique index), so at an
epoch's last step `lr` and `wps` are the epoch's.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.store.pagination import row_id_after
from app.store.tables import Metric

KEYS = ("train_ppl", "valid_ppl", "test_ppl", "lr", "wps", "train_ppl_running")


def decode_page_token(token: str | None) -> int:
    """The metric id a page starts after; `Invalid` for a token this API did not issue."""
    if not token:
        return 0
    after_id = row_id_after(token)
    if after_id is None:
        raise Invalid(
            f"page_token {token[:100]!r} is not valid: pass a previous page's next_page_token", field="page_token"
        )
    return after_id


def history(
    session: Session, job_id: str, keys: list[str] | None, page_token: str | None, limit: int
) -> tuple[list[Metric], str | None]:
    """A page of points in the order they were recorded, and the next page's token.

    Every read is a range of an index in id order: (job_id, id) for all keys, (job_id, key, id)
    for each asked key, the keys' ranges merged here; a page costs O(limit), not O(history).
    """
    after_id = decode_page_token(page_token)
    wanted = [None] if not keys else sorted(set(keys))
    rows: list[Metric] = []
    for key in wanted:
        stmt = select(Metric).where(Metric.job_id == job_id, Metric.id > after_id)
        if key is not None:
            stmt = stmt.where(Metric.key == key)
        rows.extend(session.scalars(stmt.order_by(Metric.id).limit(limit + 1)))
    rows.sort(key=lambda row: row.id)
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], str(rows[limit - 1].id)


def downsampled(session: Session, job_id: str, keys: list[str] | None, max_points: int) -> list[Metric]:
    """At most `max_points` (m >= 2) points per key, evenly spaced in step, for charts; ordered by
    (key, step, id).

    Points are ordered by (step, id). A key with at most m points keeps them all. Otherwise, with
    a and b its first and last steps, it keeps the last point and, for i = 0 .. m - 2, the first
    point whose step is at least a + ceil(i * (b - a) / (m - 1)) (the first point for i = 0); a
    point picked twice counts once. Each pick is one seek in the (job_id, key, step, id) index, so
    the cost grows with m and the number of keys, not with the history.
    """
    m = max_points
    of_key = select(Metric).where(Metric.job_id == job_id)
    picked: list[Metric] = []
    for key in sorted(_keys(session, job_id) if not keys else set(keys)):
        in_key = of_key.where(Metric.key == key)
        # How many points, counted no further than m + 1.
        capped = session.scalar(
            select(func.count()).select_from(in_key.with_only_columns(Metric.id).limit(m + 1).subquery())
        )
        if not capped:
            continue
        if capped <= m:
            picked.extend(session.scalars(in_key.order_by(Metric.step, Metric.id)))
            continue
        first = session.scalars(in_key.order_by(Metric.step, Metric.id).limit(1)).one()
        last = session.scalars(in_key.order_by(Metric.step.desc(), Metric.id.desc()).limit(1)).one()
        ids = {first.id, last.id}
        if m > 2:
            params = {"job_id": job_id, "key": key, "a": first.step, "span": last.step - first.step, "m": m}
            ids.update(i for i in session.scalars(SEEKS, params) if i is not None)
        points = session.scalars(select(Metric).where(Metric.id.in_(ids)))
        picked.extend(sorted(points, key=lambda row: (row.step, row.id)))
    return picked


# For i = 1 .. m - 2: the id of the key's first point at or after step a + ceil(i * span / (m - 1)),
# computed in 64-bit integers; each subquery is one seek in the (job_id, key, step, id) index.
SEEKS = text(
    """
    WITH RECURSIVE targets(i) AS (
        SELECT 1 WHERE :m > 2
        UNION ALL SELECT i + 1 FROM targets WHERE i < :m - 2
    )
    SELECT (
        SELECT metrics.id FROM metrics
        WHERE metrics.job_id = :job_id AND metrics.key = :key
          AND metrics.step >= :a + (i * CAST(:span AS BIGINT) + :m - 2) / (:m - 1)
        ORDER BY metrics.step, metrics.id
        LIMIT 1
    )
    FROM targets
    """
)


def _keys(session: Session, job_id: str) -> list[str]:
    """The keys a job has points for, one index seek per key (a loose scan of (job_id, key, ...))."""
    found: list[str] = []
    while True:
        stmt = select(func.min(Metric.key)).where(Metric.job_id == job_id)
        if found:
            stmt = stmt.where(Metric.key > found[-1])
        key = session.scalar(stmt)
        if key is None:
            return found
        found.append(key)


def after(session: Session, job_id: str, after_id: int, limit: int) -> list[Metric]:
    """Points recorded after metric id `after_id`, oldest first (for event streams)."""
    stmt = select(Metric).where(Metric.job_id == job_id, Metric.id > after_id).order_by(Metric.id).limit(limit)
    return list(session.scalars(stmt))


def last_id(session: Session, job_id: str) -> int:
    """The id of the job's latest point (0 when it has none): where a stream without history starts."""
    return session.scalar(select(func.max(Metric.id)).where(Metric.job_id == job_id)) or 0
