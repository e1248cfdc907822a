"""API keys: create, list, revoke and authenticate.

A key is `lsk_` and 43 url-safe base64 characters (256 random bits). Only its sha256 is stored:
with that much entropy a plain hash cannot be reversed, and a lookup by hash is one indexed read.
The stored hash is compared once more in constant time. The first 12 characters (`prefix`) are
kept to recognise a key in listings; the secret itself is shown once, when it is created.

Every request's key is looked up in the database, not in a cache, so a revoked key is refused by
the next request of every API process; the lookup reads the four columns it needs as a plain row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.auth.principal import Principal
from app.auth.scopes import SCOPES, Scope
from app.errors import Invalid, NotFound
from app.store.db import write_session
from app.store.tables import ApiKey, new_id, utcnow

SECRET_PREFIX = "lsk_"
PREFIX_CHARS = 12
MAX_KEY_CHARS = 200  # anything longer cannot be a key; refused before hashing


def new_secret() -> str:
    """A fresh key: `lsk_` and 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a key: sha256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(engine: Engine, name: str, scope: str) -> tuple[ApiKey, str]:
    """Store a new key; returns its row and the secret (which is not stored and cannot be shown again)."""
    if scope not in SCOPES:
        raise Invalid(f"scope {scope!r} is not one of {', '.join(SCOPES)}", field="scope")
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise Invalid("a key's name must have 1-200 characters", field="name")
    secret = new_secret()
    row = ApiKey(
        id=new_id("key"),
        name=name,
        scope=scope,
        prefix=secret[:PREFIX_CHARS],
        secret_hash=hash_secret(secret),
        created_at=utcnow(),
    )
    with write_session(engine) as session:
        session.add(row)
    return row, secret


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, oldest first, revoked ones included."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(engine: Engine, key_id: str) -> ApiKey:
    """Revoke a key (idempotent) and end its dashboard sessions; its rows keep it as their owner.
    `NotFound` for an unknown id."""
    from app.auth import sessions

    with write_session(engine) as session:
        row = session.get(ApiKey, key_id, with_for_update=True)
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        sessions.end_all(session, key_id)
    return row


def active_key_count(session: Session) -> int:
    """How many keys are not revoked."""
    return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0


_KEY_LOOKUP = select(ApiKey.id, ApiKey.name, ApiKey.scope, ApiKey.secret_hash, ApiKey.revoked_at)


def authenticate(session: Session, secret: str) -> Principal | None:
    """The caller a key stands for; None for an unknown or revoked key."""
    if not secret or len(secret) > MAX_KEY_CHARS:
        return None
    digest = hash_secret(secret)
    row = session.connection().execute(_KEY_LOOKUP.where(ApiKey.secret_hash == digest)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_hash, digest):
        return None
    return Principal(key_id=row.id, name=row.name, scope=Scope(row.scope))
