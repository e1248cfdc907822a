"""Errors the persistence core raises for callers to map: the HTTP layer turns each into a status.

The core never speaks HTTP; `app.api.problems` maps these classes to problem+json answers.
"""

from __future__ import annotations

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
