"""Keyset pagination over (created_at, id), newest first, with an opaque cursor.

A cursor is the url-safe base64 of `{"t": created_at, "id": id}` of the last row of a page; the
next page holds the rows strictly after it in (created_at desc, id desc) order, so rows inserted
meanwhile never shift a page. Tables listed this way have an index on (created_at, id): a page
is one backward range scan of it, whatever the table's size.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import Invalid

T = TypeVar("T")

# The largest id an integer primary key holds (PostgreSQL's `integer`): a client's "after id N" past it
# names no row, and is read as this bound rather than sent to a database that would refuse the number.
MAX_ROW_ID = 2**31 - 1
ROW_ID = re.compile(r"[0-9]{1,18}")  # an id as the API sends them (`str.isdigit` also takes "²")


def row_id_after(text: str) -> int | None:
    """The row id a client's "after" names, at most `MAX_ROW_ID`; None when `text` is not 1-18 ASCII digits."""
    if not ROW_ID.fullmatch(text):
        return None
    return min(int(text), MAX_ROW_ID)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """The opaque cursor pointing after a row."""
    raw = json.dumps({"t": created_at.isoformat(), "id": row_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor; `Invalid` when it was not made by `encode_cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        created_at = datetime.fromisoformat(data["t"])
        row_id = data["id"]
        if not isinstance(row_id, str) or len(row_id) > 100 or created_at.tzinfo is None:
            raise ValueError("not a cursor")
        created_at = created_at.astimezone(UTC)  # OverflowError at the ends of the calendar
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError, RecursionError):
        raise Invalid(
            f"cursor {cursor[:100]!r} is not valid: pass a previous page's next_cursor", field="cursor"
        ) from None
    return created_at, row_id


def keyset_page(
    session: Session,
    stmt: Select[T],
    created_at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[T], str | None]:
    """One page of `stmt`'s rows, newest first, and the cursor of the next page (None at the end)."""
    if cursor:
        after_t, after_id = decode_cursor(cursor)
        # A row-value comparison: the (created_at, id) index serves it as one range.
        stmt = stmt.where(tuple_(created_at, row_id) < tuple_(after_t, after_id))
    rows = list(session.scalars(stmt.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(getattr(last, created_at.key), getattr(last, row_id.key))


# --- other orders than newest first ---

NEWEST_FIRST = "-created_at"
OLDEST_FIRST = "created_at"


def _encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_sorted(cursor: str, sort: str) -> dict[str, Any]:
    """A cursor's fields, checked to be of `sort` (a newest-first cursor names no sort)."""
    invalid = Invalid(f"cursor {cursor[:100]!r} is not valid: pass a previous page's next_cursor", field="cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise invalid from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or len(data["id"]) > 100:
        raise invalid
    made_for = data.get("s", NEWEST_FIRST)
    if made_for != sort:
        raise Invalid(
            f"cursor was made for sort={str(made_for)[:40]}, not sort={sort}: a cursor continues the list it came "
            "from; start again without a cursor",
            field="cursor",
        )
    return data


def sorted_page(
    session: Session,
    stmt: Select[T],
    sort: str,
    created_at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[Any],
    limit: int,
    cursor: str | None,
    value: InstrumentedAttribute[Any] | None = None,
) -> tuple[list[T], str | None]:
    """One page of `stmt`'s rows in the order `sort` names, and the next page's cursor (None at the end).

    `-created_at` (newest first) and `created_at` page by (created_at, id); any other sort is by
    `value`, lowest first with the rows that have none last, then by id. A cursor encodes its sort and
    the last row's key, so a page never shifts; a cursor of another sort is `Invalid`.
    """
    if sort == NEWEST_FIRST:
        if cursor:
            _decode_sorted(cursor, sort)  # a cursor of another sort is refused, not misread
        return keyset_page(session, stmt, created_at, row_id, limit, cursor)
    if sort == OLDEST_FIRST:
        if cursor:
            data = _decode_sorted(cursor, sort)
            after_t, after_id = decode_cursor(_encode({"t": data.get("t"), "id": data["id"]}))
            stmt = stmt.where(tuple_(created_at, row_id) > tuple_(after_t, after_id))
        rows = list(session.scalars(stmt.order_by(created_at.asc(), row_id.asc()).limit(limit + 1)))
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        last = rows[-1]
        t = getattr(last, created_at.key)
        return rows, _encode({"s": sort, "t": t.isoformat(), "id": getattr(last, row_id.key)})
    if value is None:
        raise ValueError(f"sort {sort!r} needs a value column")
    if cursor:
        data = _decode_sorted(cursor, sort)
        v = data.get("v")
        if v is not None:
            try:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v := float(v)):
                    raise ValueError(v)
            except (ValueError, OverflowError):
                raise Invalid(
                    f"cursor {cursor[:100]!r} is not valid: pass a previous page's next_cursor", field="cursor"
                ) from None
        after_id = data["id"]
        if v is None:
            stmt = stmt.where(value.is_(None), row_id > after_id)
        else:
            later = or_(value > v, and_(value == v, row_id > after_id))
            stmt = stmt.where(or_(and_(value.is_not(None), later), value.is_(None)))
    rows = list(session.scalars(stmt.order_by(value.asc().nulls_last(), row_id.asc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, _encode({"s": sort, "v": getattr(last, value.key), "id": getattr(last, row_id.key)})
