"""Dashboard sessions: what `POST /v1/session` creates instead of keeping the API key in a cookie.

The cookie holds `lss_` and 256 random bits; only their sha256 is stored, with the key the session
logged in with. A session lasts `LSTMLM_SESSION_HOURS` from its last use (the expiry slides, moved
at most once a minute so that reading pages is not a write per request), and ends on logout or when
its key is revoked. Dead sessions (ended or expired) are deleted at the next login.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.orm import Session

from app.auth.keys import hash_secret
from app.auth.principal import Principal
from app.auth.scopes import Scope
from app.errors import NotFound
from app.store.db import rows_changed, write_session
from app.store.tables import ApiKey, BrowserSession, new_id, utcnow

SECRET_PREFIX = "lss_"
MAX_SECRET_CHARS = 200
SLIDE_EVERY = timedelta(seconds=60)  # the expiry moves on at most this often
USER_AGENT_CHARS = 200


@dataclass(frozen=True)
class Checked:
    """A live session's caller; `renewed` when this request moved its expiry on (re-send the cookie)."""

    principal: Principal
    renewed: bool


def create(engine: Engine, key_id: str, hours: float, user_agent: str | None) -> tuple[BrowserSession, str]:
    """A new session for `key_id`; returns its row and the cookie's value (not stored)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = BrowserSession(
        id=new_id("ses"),
        key_id=key_id,
        secret_hash=hash_secret(secret),
        user_agent=(user_agent or None) and user_agent[:USER_AGENT_CHARS],
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    with write_session(engine) as session:
        session.execute(
            delete(BrowserSession).where(or_(BrowserSession.ended_at.is_not(None), BrowserSession.expires_at < now))
        )
        session.add(row)
    return row, secret


def authenticate(engine: Engine, secret: str | None, hours: float) -> Checked | None:
    """The caller of a live session (not ended, not expired, its key not revoked); None otherwise.
    Slides the expiry to `hours` from now when it was last moved over a minute ago."""
    if not secret or len(secret) > MAX_SECRET_CHARS or not secret.startswith(SECRET_PREFIX):
        return None
    digest = hash_secret(secret)
    now = utcnow()
    with Session(engine) as session:
        found = session.execute(
            select(BrowserSession, ApiKey)
            .join(ApiKey, ApiKey.id == BrowserSession.key_id)
            .where(BrowserSession.secret_hash == digest)
        ).one_or_none()
    if found is None:
        return None
    row, key = found
    if (
        row.ended_at is not None
        or row.expires_at <= now
        or key.revoked_at is not None
        or not hmac.compare_digest(row.secret_hash, digest)
    ):
        return None
    principal = Principal(key_id=key.id, name=key.name, scope=Scope(key.scope), session_id=row.id)
    if now - row.last_seen_at < SLIDE_EVERY:
        return Checked(principal, renewed=False)
    with write_session(engine) as session:
        session.execute(
            update(BrowserSession)
            .where(BrowserSession.id == row.id, BrowserSession.ended_at.is_(None))
            .values(last_seen_at=now, expires_at=now + timedelta(hours=hours))
        )
    return Checked(principal, renewed=True)


def end(engine: Engine, secret: str | None) -> None:
    """Log out: end the session this cookie value names, if any."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return
    with write_session(engine) as session:
        session.execute(
            update(BrowserSession)
            .where(BrowserSession.secret_hash == hash_secret(secret), BrowserSession.ended_at.is_(None))
            .values(ended_at=utcnow())
        )


def end_one(engine: Engine, key_id: str, session_id: str) -> None:
    """End one of `key_id`'s live sessions; `NotFound` for another key's, a dead or an unknown one."""
    now = utcnow()
    with write_session(engine) as session:
        ended = rows_changed(
            session,
            update(BrowserSession)
            .where(
                BrowserSession.id == session_id,
                BrowserSession.key_id == key_id,
                BrowserSession.ended_at.is_(None),
                BrowserSession.expires_at > now,
            )
            .values(ended_at=now)
            .execution_options(synchronize_session=False),
        )
        if ended != 1:
            raise NotFound(f"no session {session_id!r} of this key")


def end_all(session: Session, key_id: str) -> None:
    """End every session of a key (it is being revoked), in the caller's transaction."""
    session.execute(
        update(BrowserSession)
        .where(BrowserSession.key_id == key_id, BrowserSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def live(session: Session, key_id: str, now: datetime | None = None) -> list[BrowserSession]:
    """A key's live sessions, newest first."""
    now = now or utcnow()
    stmt = (
        select(BrowserSession)
        .where(BrowserSession.key_id == key_id, BrowserSession.ended_at.is_(None), BrowserSession.expires_at > now)
        .order_by(BrowserSession.created_at.desc(), BrowserSession.id.desc())
    )
    return list(session.scalars(stmt))
