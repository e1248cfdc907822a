"""What an owner calls a run: a name, tags and notes on a training job or a scoring.

Tags live twice (see `app.store.tables.JobTag`): the row's `tags` keeps the order given, for
display; the tag tables hold one row per tag, for the list filters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, exists
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.store.tables import Job, JobTag, Scoring, ScoringTag

MAX_NAME = 200
MAX_TAGS = 20
MAX_TAG = 50
MAX_NOTES = 10_000
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,50}$"
_TAG = re.compile(TAG_PATTERN)


def clean_name(name: str | None) -> str | None:
    """A name as stored: None or an empty one is no name; `Invalid` past `MAX_NAME` characters."""
    return _clean_text(name, "name", MAX_NAME)


def clean_notes(notes: str | None) -> str | None:
    """Notes as stored: None or empty ones are none; `Invalid` past `MAX_NOTES` characters."""
    return _clean_text(notes, "notes", MAX_NOTES)


def _clean_text(text: str | None, field: str, limit: int) -> str | None:
    if text is None or text == "":
        return None
    if len(text) > limit:
        raise Invalid(f"{field} must be at most {limit:,} characters, got {len(text):,}", field=field)
    if "\x00" in text:
        raise Invalid(f"{field} must not contain a NUL character (\\u0000)", field=field)
    return text


def clean_tags(tags: Sequence[str] | None) -> list[str]:
    """Tags as stored: each 1-50 characters of letters, digits and `_.:-`, duplicates dropped (the
    first kept, order kept), at most `MAX_TAGS`; `Invalid` naming the first bad one."""
    kept: list[str] = []
    for tag in tags or ():
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            shown = repr(tag)[:60]
            raise Invalid(
                f"tags: each tag must be 1-{MAX_TAG} characters of letters, digits and _ . : -, got {shown}",
                field="tags",
            )
        if tag not in kept:
            kept.append(tag)
    if len(kept) > MAX_TAGS:
        raise Invalid(f"tags: at most {MAX_TAGS} tags, got {len(kept)}", field="tags")
    return kept


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """The metadata fields present in `values`, checked and in their stored form."""
    out: dict[str, Any] = {}
    if "name" in values:
        out["name"] = clean_name(values["name"])
    if "tags" in values:
        out["tags"] = clean_tags(values["tags"])
    if "notes" in values:
        out["notes"] = clean_notes(values["notes"])
    return out


def apply(session: Session, row: Job | Scoring, values: dict[str, Any]) -> None:
    """Set the (already cleaned) fields of `values` on `row`; its tag rows follow its `tags`."""
    if "name" in values:
        row.name = values["name"]
    if "notes" in values:
        row.notes = values["notes"]
    if "tags" in values:
        row.tags = list(values["tags"])
        session.flush()  # the row exists before its tag rows name it
        if isinstance(row, Job):
            session.execute(delete(JobTag).where(JobTag.job_id == row.id))
            session.add_all(JobTag(job_id=row.id, tag=tag) for tag in row.tags)
        else:
            session.execute(delete(ScoringTag).where(ScoringTag.scoring_id == row.id))
            session.add_all(ScoringTag(scoring_id=row.id, tag=tag) for tag in row.tags)


def forget_tags(session: Session, row: Job | Scoring) -> None:
    """Delete a row's tag rows (before the row itself)."""
    if isinstance(row, Job):
        session.execute(delete(JobTag).where(JobTag.job_id == row.id))
    else:
        session.execute(delete(ScoringTag).where(ScoringTag.scoring_id == row.id))


def has_job_tags(tags: Sequence[str]) -> list[ColumnElement[bool]]:
    """WHERE clauses keeping the jobs that have every one of `tags` (one primary-key seek each)."""
    return [exists().where(JobTag.job_id == Job.id, JobTag.tag == tag) for tag in tags]


def has_scoring_tags(tags: Sequence[str]) -> list[ColumnElement[bool]]:
    return [exists().where(ScoringTag.scoring_id == Scoring.id, ScoringTag.tag == tag) for tag in tags]


def check_filter_tags(tags: Sequence[str] | None) -> list[str]:
    """The `tag` filter of a list: each must be a tag that could exist (else `Invalid`)."""
    tags = list(tags or ())
    if len(tags) > MAX_TAGS:
        raise Invalid(f"tag: at most {MAX_TAGS} tags to filter by, got {len(tags)}", field="tag")
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise Invalid(
                f"tag must be 1-{MAX_TAG} characters of letters, digits and _ . : -, got {tag[:60]!r}", field="tag"
            )
    return list(dict.fromkeys(tags))
