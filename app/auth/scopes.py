"""Scopes of an API key, ordered: `read` < `write` < `admin`.

- read: list and get datasets, jobs, metrics, checkpoints and models; score and generate.
- write: also upload datasets, submit, cancel and delete jobs, delete datasets (its own).
- admin: everything, for every owner: aliases, server-side corpora, rows made before keys existed.
"""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}
SCOPES = tuple(s.value for s in Scope)


def allows(granted: Scope, needed: Scope) -> bool:
    """Whether a key with scope `granted` may do what needs `needed`."""
    return _RANK[granted] >= _RANK[needed]
