"""Who is asking: the key a request authenticated with, or the local user when authentication is off."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.scopes import Scope


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `key_id` is None only when authentication is off; `session_id` names
    the dashboard session the request came with (None for a key in the Authorization header)."""

    key_id: str | None
    name: str
    scope: Scope
    session_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.scope == Scope.ADMIN

    @property
    def owner_id(self) -> str | None:
        """What rows this caller creates record as their owner."""
        return self.key_id


# With authentication off (tests, loopback-only use) every request acts as this admin; rows it
# creates have no owner, so they stay visible to admin keys if authentication is turned on later.
LOCAL = Principal(key_id=None, name="local (authentication off)", scope=Scope.ADMIN)
