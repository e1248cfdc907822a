"""Who may see a dataset, job, checkpoint or model.

- Every dataset, job and checkpoint records the key that created it (`owner_id`).
- An admin key sees everything. Any other key sees what it owns; for anything else it gets the
  same 404 as for an id that does not exist, and lists leave it out.
- Server-side (builtin) datasets are registered by admins and shared: every key may read them and
  train on them; only an admin deletes them.
- Aliases are made by admins and published: every key may resolve an alias (score or generate with
  the model it names, see it in the model list) without seeing the job behind it.
- Rows created while authentication was off, or before keys existed, have no owner: admins only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, or_, true

from app.auth.principal import Principal
from app.store.tables import Dataset

BUILTIN_SOURCE = "builtin"


def may_see(viewer: Principal, owner_id: str | None) -> bool:
    """Whether `viewer` may see a row owned by `owner_id`."""
    return viewer.is_admin or (viewer.key_id is not None and owner_id == viewer.key_id)


def visible(viewer: Principal, owner_column: Any) -> ColumnElement[bool]:
    """A WHERE clause keeping the rows `viewer` may see (by their owner column)."""
    if viewer.is_admin:
        return true()
    if viewer.key_id is None:
        return ~true()
    result: ColumnElement[bool] = owner_column == viewer.key_id
    return result


def may_see_dataset(viewer: Principal, dataset: Dataset) -> bool:
    """Own datasets, and the shared server-side ones."""
    return dataset.source == BUILTIN_SOURCE or may_see(viewer, dataset.owner_id)


def visible_datasets(viewer: Principal) -> ColumnElement[bool]:
    """A WHERE clause on `Dataset` keeping what `may_see_dataset` allows."""
    return or_(Dataset.source == BUILTIN_SOURCE, visible(viewer, Dataset.owner_id))


def may_delete_dataset(viewer: Principal, dataset: Dataset) -> bool:
    """Only admins delete the shared server-side datasets; owners delete their uploads."""
    return viewer.is_admin or (dataset.source != BUILTIN_SOURCE and may_see(viewer, dataset.owner_id))
