"""Errors the persistence core raises for callers to map: the HTTP layer turns each into a status.

The core never speaks HTTP; `app.api.problems` maps these classes to problem+json answers.
"""

from __future__ import annotations

import re
from typing import Any


class ServiceError(Exception):
    """Base class: a request the core refuses, with a message fit for the caller."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(ServiceError):
    """The addressed dataset, job or checkpoint does not exist."""


class Conflict(ServiceError):
    """The resource is in a state that does not allow the operation (cancel a finished job)."""


class Invalid(ServiceError):
    """The request is well formed but its content cannot be accepted (bad config, bad corpus)."""


class TooLarge(ServiceError):
    """The request exceeds a size limit."""


class Forbidden(ServiceError):
    """The caller may see the resource but its key may not change it (a server-side corpus)."""


class OverQuota(ServiceError):
    """The caller's key is over one of its per-key limits (stored bytes, queued jobs)."""


class Busy(ServiceError):
    """The server is at a concurrency limit; the caller may retry after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


MAX_DETAIL_CHARS = 300  # an error message a caller sees never grows with what it sent
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:,;()\[\]{}]+){2,}[\\/]?")


def public_text(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text` fit to show a caller: server paths reduced to their last part, at most `limit` characters."""
    text = _PATH.sub(lambda m: ".../" + m.group(0).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
