"""What a crash can leave behind in storage, found and removed when a process starts.

- Writes that never finished: `.<name>.<random>.partial` files and folders on a local disk, and
  multipart uploads on S3, older than `LSTMLM_STALE_WRITE_SECONDS` (younger ones may be another
  process' writes in progress), and the local scratch folders of this host's cache: the API
  sweeps these.
- Dataset folders whose row was never written (the API was killed between the upload and the
  insert): the API sweeps these, as the only writer of datasets.
- Unfinished checkpoint writes, checkpoint files whose row was never written, and the folders of
  jobs that no longer exist (deleted between the commit and the file removal): workers sweep
  these, skipping the folders of jobs another worker holds right now.

Every removal is logged. Rows are never touched: a row without its file is the registry's and the
resume path's concern (they fall back to another checkpoint).
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.settings import Settings
from app.store.storage import PARTIAL_SUFFIX, Storage, join, open_storage
from app.store.tables import Checkpoint, Dataset, Job
from app.training.checkpoints import CHECKPOINTS, job_key
from app.training.datasets import DATASETS
from app.training.jobs import ACTIVE

log = logging.getLogger("sweep")

DATASET_PREFIX = "ds_"
JOB_PREFIX = "job_"
CHECKPOINT_SUFFIX = ".pt"
TEMPORARY_SUFFIX = ".tmp"


def _removed(what: str, why: str) -> str:
    log.info("removed %s: %s", what, why)
    return what


def sweep_partial_writes(settings: Settings) -> list[str]:
    """Remove writes that never finished (older than `stale_write_seconds`) from storage, and this
    host's scratch folders of that age; returns what was removed."""
    storage = open_storage(settings)
    removed = [
        _removed(k, "an upload that never finished") for k in storage.sweep_partial(settings.stale_write_seconds)
    ]
    cache = getattr(storage, "cache", None)
    if cache is not None:
        removed += [
            _removed(p, "an upload that never finished") for p in cache.sweep_scratch(settings.stale_write_seconds)
        ]
    return removed


def sweep_datasets(engine: Engine, settings: Settings) -> list[str]:
    """Remove unfinished writes and dataset folders without a row; returns what was removed."""
    removed = sweep_partial_writes(settings)
    storage = open_storage(settings)
    with Session(engine) as session:
        # a dataset's folder is named by its id (an older row may record it by its path)
        known = {
            *session.scalars(select(Dataset.id)),
            *(os.path.basename(p.rstrip("/")) for p in session.scalars(select(Dataset.path))),
        }
    for name in storage.children(DATASETS):
        if name.startswith(DATASET_PREFIX) and not name.endswith(PARTIAL_SUFFIX) and name not in known:
            storage.delete_tree(join(DATASETS, name))
            removed.append(_removed(join(DATASETS, name), "a dataset folder without a dataset"))
    return removed


def sweep_job_folder(session: Session, storage: Storage, job_id: str) -> list[str]:
    """In one job's checkpoint folder: unfinished writes and files no checkpoint row points at."""
    recorded = {
        os.path.basename(p) for p in session.scalars(select(Checkpoint.path).where(Checkpoint.job_id == job_id))
    }
    removed = []
    for entry in storage.list(job_key(job_id)):
        name = os.path.basename(entry.key)
        if name.endswith((TEMPORARY_SUFFIX, PARTIAL_SUFFIX)):
            storage.delete(entry.key)
            removed.append(_removed(entry.key, "a checkpoint write that never finished"))
        elif name.endswith(CHECKPOINT_SUFFIX) and name not in recorded:
            storage.delete(entry.key)
            removed.append(_removed(entry.key, "a checkpoint file without a checkpoint"))
    return removed


def sweep_checkpoints(engine: Engine, settings: Settings) -> list[str]:
    """Remove what dead workers and interrupted deletes left under the checkpoints folder, except in
    the folders of jobs a worker holds now (their files may be being written)."""
    storage = open_storage(settings)
    removed = []
    with Session(engine) as session:
        status = {job_id: state for job_id, state in session.execute(select(Job.id, Job.status)).all()}
        for name in storage.children(CHECKPOINTS):
            if not name.startswith(JOB_PREFIX):
                continue
            if name not in status:
                storage.delete_tree(job_key(name))
                removed.append(_removed(job_key(name), "the files of a deleted job"))
            elif status[name] not in ACTIVE:
                removed += sweep_job_folder(session, storage, name)
    return removed
