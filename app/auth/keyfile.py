"""The admin key of a local install: created on first start and kept in a file only its user reads.

`python -m app run` calls `ensure_admin_key` after migrating: when the database has no active key it
creates an admin key and writes it to `<data_dir>/admin.key` with mode 0600 (as Jupyter keeps its
token); the CLI client and the dashboard read that file (or `LSTMLM_API_KEY`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.auth import keys
from app.auth.scopes import Scope

FIRST_KEY_NAME = "admin (created at first start)"


def write_key_file(path: Path, secret: str) -> None:
    """Write `secret` to `path`, readable and writable by this user only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, f"{secret}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_key_file(path: Path) -> str | None:
    """The key stored in `path`, or None when there is no such file."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def ensure_admin_key(engine: Engine, path: Path) -> str | None:
    """Create an admin key and save it to `path` when the database has no active key.

    Returns the new secret, or None when keys already existed (nothing is written then).
    """
    with Session(engine) as session:
        if keys.active_key_count(session):
            return None
    _, secret = keys.create_key(engine, FIRST_KEY_NAME, Scope.ADMIN)
    write_key_file(path, secret)
    return secret
