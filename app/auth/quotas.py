"""Per-key limits: bytes stored (uploads, checkpoints, scoring results) and work waiting in the queue.

Admin keys (and the local user when authentication is off) are not limited. A limit of None
means no limit. Checks run inside the transaction that adds the row, so concurrent requests of
one key cannot both pass on SQLite (write lock); on PostgreSQL (read committed) requests of one key
that run at the same moment can each pass, each adding at most its own row over the limit.
Checkpoints and scoring results are written by workers and never refused: they count against the
key's next upload (or its next scoring, refused while the key is over its limit).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.errors import OverQuota
from app.settings import Settings
from app.store.tables import Checkpoint, Dataset, Job, Scoring

UPLOAD_SOURCE = "upload"
QUEUED = "queued"


def stored_bytes(session: Session, owner_id: str) -> int:
    """Bytes of a key's uploaded corpora (not deleted), its jobs' checkpoints, and its scorings' uploaded
    texts and results files."""
    uploads = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
            Dataset.owner_id == owner_id, Dataset.source == UPLOAD_SOURCE, Dataset.deleted_at.is_(None)
        )
    )
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(Checkpoint.size_bytes), 0)).where(Checkpoint.owner_id == owner_id)
    )
    scorings = session.scalar(
        select(func.coalesce(func.sum(Scoring.input_bytes + Scoring.bytes_done), 0)).where(Scoring.owner_id == owner_id)
    )
    return int(uploads or 0) + int(checkpoints or 0) + int(scorings or 0)


def queued_work(session: Session, owner_id: str) -> int:
    """How many of a key's training jobs and scorings are queued."""
    jobs = session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.status == QUEUED))
    scorings = session.scalar(
        select(func.count()).select_from(Scoring).where(Scoring.owner_id == owner_id, Scoring.status == QUEUED)
    )
    return int(jobs or 0) + int(scorings or 0)


def _limited(owner: Principal, limit: int | None) -> str | None:
    """The key id to count for, or None when this caller is not limited."""
    return None if owner.is_admin or owner.key_id is None or limit is None else owner.key_id


def check_storage(session: Session, settings: Settings, owner: Principal, adding: int) -> None:
    """`OverQuota` when storing `adding` more bytes would take the key over its limit."""
    limit = settings.max_stored_bytes_per_key
    key_id = _limited(owner, limit)
    if key_id is None or limit is None:
        return
    used = stored_bytes(session, key_id)
    if used + adding > limit:
        over = f"{adding:,} more would exceed its limit" if adding else "over its limit"
        raise OverQuota(
            f"this key stores {used:,} bytes (uploads, checkpoints and scoring results); {over} of {limit:,} "
            "bytes: delete datasets, jobs or scorings first",
            used_bytes=used,
            adding_bytes=adding,
            limit_bytes=limit,
        )


def check_queue(session: Session, settings: Settings, owner: Principal) -> None:
    """`OverQuota` when the key already has its limit of queued training jobs and scorings together."""
    limit = settings.max_queued_jobs_per_key
    key_id = _limited(owner, limit)
    if key_id is None or limit is None:
        return
    queued = queued_work(session, key_id)
    if queued >= limit:
        raise OverQuota(
            f"this key has {queued} queued job(s) and scoring(s), its limit is {limit}: "
            "wait for them to start or cancel some",
            queued_jobs=queued,
            limit_jobs=limit,
        )
