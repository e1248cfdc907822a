"""What a crash can leave behind, found and removed when a process starts.

- `.ds_<id>.partial` staging folders of uploads that never finished, and dataset folders whose row
  was never written (the API was killed between the rename and the insert): the API sweeps these,
  as the only writer of uploads.
- `.ckpt_*.tmp` files of checkpoint writes that never finished, checkpoint files whose row was never
  written, and the folders of jobs that no longer exist (deleted between the commit and the file
  removal): workers sweep these, skipping the folders of jobs another worker holds right now.

Every removal is logged. Rows are never touched: a row without its file is the registry's and the
resume path's concern (they fall back to another checkpoint).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.settings import Settings
from app.store.tables import Checkpoint, Dataset, Job
from app.training.datasets import STAGING_PREFIX, STAGING_SUFFIX
from app.training.jobs import ACTIVE

log = logging.getLogger("sweep")

DATASET_PREFIX = "ds_"
JOB_PREFIX = "job_"
CHECKPOINT_SUFFIX = ".pt"
TEMPORARY_SUFFIX = ".tmp"


def _remove(path: Path, why: str) -> str:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    log.info("removed %s: %s", path, why)
    return str(path)


def sweep_datasets(engine: Engine, settings: Settings) -> list[str]:
    """Remove upload staging folders and dataset folders without a row; returns what was removed."""
    root = settings.datasets_dir
    if not root.is_dir():
        return []
    with Session(engine) as session:
        # an upload's folder is named by its id and is its path; a server-side corpus' tokens folder
        # (`<id>/tokens`) by its id
        known = {*session.scalars(select(Dataset.id)), *(Path(p).name for p in session.scalars(select(Dataset.path)))}
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(STAGING_PREFIX) and entry.name.endswith(STAGING_SUFFIX):
            removed.append(_remove(entry, "an upload that never finished"))
        elif entry.is_dir() and entry.name.startswith(DATASET_PREFIX) and entry.name not in known:
            removed.append(_remove(entry, "a dataset folder without a dataset"))
    return removed


def sweep_job_folder(session: Session, folder: Path) -> list[str]:
    """In one job's checkpoint folder: unfinished writes and files no checkpoint row points at."""
    recorded = {Path(p).name for p in session.scalars(select(Checkpoint.path).where(Checkpoint.job_id == folder.name))}
    removed = []
    for entry in sorted(folder.iterdir()):
        if entry.name.endswith(TEMPORARY_SUFFIX):
            removed.append(_remove(entry, "a checkpoint write that never finished"))
        elif entry.name.endswith(CHECKPOINT_SUFFIX) and entry.name not in recorded:
            removed.append(_remove(entry, "a checkpoint file without a checkpoint"))
    return removed


def sweep_checkpoints(engine: Engine, settings: Settings) -> list[str]:
    """Remove what dead workers and interrupted deletes left under the checkpoints folder, except in
    the folders of jobs a worker holds now (their files may be being written)."""
    root = settings.checkpoints_dir
    if not root.is_dir():
        return []
    removed = []
    with Session(engine) as session:
        status = {job_id: state for job_id, state in session.execute(select(Job.id, Job.status)).all()}
        for entry in sorted(root.iterdir()):
            if not entry.is_dir() or not entry.name.startswith(JOB_PREFIX):
                continue
            if entry.name not in status:
                removed.append(_remove(entry, "the files of a deleted job"))
            elif status[entry.name] not in ACTIVE:
                removed += sweep_job_folder(session, entry)
    return removed
