r"""Jobs as the API sees them: submit, read, list, cancel and delete.

States::

    queued --claim--> running --fit done--> succeeded
      |                 |   \--error------> failed      (or back to queued while attempts remain)
      |                 |    \--SIGTERM---> queued      (resumes from its interrupt checkpoint)
      |                 |     \--lease expired--> queued, or failed after max_attempts
      |               cancel
      |                 v
      |             canceling --next step boundary--> canceled (keeps its checkpoints)
      \--cancel--> canceled

The worker's side (claim, lease, conditional writes) is in `app.training.queue` and `app.training.attempt`.
Reads take a `Session`; writes take the `Engine` and run in `write_session`. A `viewer` applies
the ownership rules of `app.auth.ownership`: a job another key owns is `NotFound` (None: no
restriction, for internal callers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from sqlalchemy import Engine, delete, false, func, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth import ownership, quotas
from app.auth.principal import LOCAL, Principal
from app.errors import Conflict, Invalid, NotFound
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import NEWEST_FIRST, OLDEST_FIRST, sorted_page
from app.store.storage import open_storage
from app.store.tables import Checkpoint, Dataset, Job, JobLog, JobTag, Metric, Scoring, Worker, new_id, utcnow
from app.training import checkpoints, run_metadata
from app.training.datasets import find_dataset
from app.training.job_config import TimeEstimate, build_config, estimate_size, estimate_time, train_vocabulary
from model.config import PAPER_PRESETS, PRESETS, ModelConfig
from model.data import epoch_size

QUEUED, RUNNING, CANCELING = "queued", "running", "canceling"
SUCCEEDED, FAILED, CANCELED = "succeeded", "failed", "canceled"
STATUSES = (QUEUED, RUNNING, CANCELING, SUCCEEDED, FAILED, CANCELED)
ACTIVE = (RUNNING, CANCELING)  # a worker holds the job
TERMINAL = (SUCCEEDED, FAILED, CANCELED)
SORTS = (NEWEST_FIRST, OLDEST_FIRST, "valid_ppl", "test_ppl")
LIVE_WORKERS = timedelta(minutes=2)  # a worker that beat this recently counts as running


@dataclass(frozen=True)
class Plan:
    """What a job would be: its dataset, config and time estimate on the device it would train on,
    and whether that time fits the server's job limit (`Invalid` from `plan` when it does not)."""

    dataset: Dataset
    config: ModelConfig
    timing: TimeEstimate
    basis: str  # whose device the estimate is for: "the live workers'", or "this server's" when none is live
    parameters: int
    train_memory_bytes: int
    vocab_size: int


def server_devices(settings: Settings) -> set[str]:
    """The devices this server's own workers would have: what the API process sees (used when no
    worker is live: a worker started by this service runs on the same machine)."""
    return {"cpu", "cuda"} if settings.worker_device != "cpu" and torch.cuda.is_available() else {"cpu"}


def training_device(config: ModelConfig, capabilities: set[str]) -> str:
    """The device a worker with `capabilities` trains `config` on."""
    return "cuda" if config.device in ("auto", "cuda") and "cuda" in capabilities else "cpu"


def planning_devices(session: Session, settings: Settings, config: ModelConfig) -> tuple[list[str], str]:
    """The devices the job could train on: those of the live workers that can run it (all live
    workers when none can yet: it waits for one), or this server's own when no worker is live."""
    cutoff = utcnow() - LIVE_WORKERS
    live = [
        set(caps or ())
        for caps in session.scalars(
            select(Worker.capabilities).where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= cutoff)
        )
    ]
    needs = set(requirements(config))
    able = [caps for caps in live if needs <= caps] or live
    if able:
        return sorted({training_device(config, caps) for caps in able}), "the live workers'"
    return [training_device(config, server_devices(settings))], "this server's"


def hours(seconds: float) -> str:
    """A duration in the unit that reads best: 89.2 h, 3.8 min, 12.5 s."""
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:,.1f} min" if seconds >= 60 else f"{seconds:,.1f} s"


def plan(session: Session, settings: Settings, dataset: Dataset, preset_name: str, overrides: dict[str, Any]) -> Plan:
    """Check a job's config (`build_config`) and estimate it on the fastest device that could run
    it; `Invalid` with the numbers when even that is past `settings.max_job_seconds`."""
    config = build_config(settings, preset_name, overrides, dataset)
    devices, basis = planning_devices(session, settings, config)
    timing = min((estimate_time(config, dataset, settings, d) for d in devices), key=lambda t: t.total_seconds)
    size = estimate_size(config, train_vocabulary(config, dataset))
    return Plan(dataset, config, timing, basis, size.parameters, size.train_memory_bytes, size.vocab_size)


def check_job_time(settings: Settings, found: Plan) -> None:
    """`Invalid` when the estimated run is past the job wall-time limit on every device that could run it."""
    total, limit = found.timing.total_seconds, settings.max_job_seconds
    if total > limit:
        where = f"{found.basis} {found.timing.device}"
        where += "" if found.basis == "the live workers'" else " (no worker is live)"
        raise Invalid(
            f"estimated {hours(total)} on {where}, past the {hours(limit)} job limit "
            "(LSTMLM_MAX_JOB_SECONDS); cap max_steps_per_epoch or max_max_epoch, or choose a smaller preset",
            field="overrides",
            estimated_seconds=round(total, 1),
            limit_seconds=limit,
            device=found.timing.device,
        )


def submit(
    engine: Engine,
    settings: Settings,
    *,
    dataset_id: str,
    preset_name: str,
    overrides: dict[str, Any],
    idempotency_key: str | None = None,
    owner: Principal = LOCAL,
    metadata: dict[str, Any] | None = None,
) -> tuple[Job, bool]:
    """Validate and queue a job; returns (job, created). A replayed Idempotency-Key returns the original.

    Idempotency keys are per owner: two keys sending the same one get two jobs.
    """
    stored_key = None if idempotency_key is None else _stored_idempotency_key(owner, idempotency_key)
    try:
        with write_session(engine) as session:
            if stored_key is not None and idempotency_key is not None:
                original = _replay(session, stored_key, idempotency_key, dataset_id, preset_name, overrides)
                if original is not None:
                    return original, False
            # FOR SHARE on PostgreSQL: a concurrent delete of the dataset waits for this job.
            dataset = find_dataset(session, dataset_id, owner, missing=Invalid, lock=True)
            values = run_metadata.clean(metadata or {})
            quotas.check_queue(session, settings, owner)
            found = plan(session, settings, dataset, preset_name, overrides)
            check_job_time(settings, found)
            job = Job(
                requirements=requirements(found.config),
                estimate={**found.timing.as_dict(), "device": found.timing.device},
                id=new_id("job"),
                status=QUEUED,
                preset=preset_name,
                overrides=overrides,
                config=found.config.to_dict(),
                dataset_id=dataset.id,
                idempotency_key=stored_key,
                attempt=0,
                max_attempts=settings.max_attempts,
                progress={},
                owner_id=owner.owner_id,
            )
            session.add(job)
            run_metadata.apply(session, job, values)
        return job, True
    except IntegrityError:
        # PostgreSQL: a concurrent request with the same key committed first.
        if stored_key is None or idempotency_key is None:
            raise
        with Session(engine) as session:
            original = _replay(session, stored_key, idempotency_key, dataset_id, preset_name, overrides)
        if original is None:
            raise
        return original, False


def requirements(config: ModelConfig) -> list[str]:
    """What a worker must advertise to run `config`: its device, unless it says `auto`, its
    precision, unless it is fp32 (every device has it), and `world_size:N` for a run on N > 1
    processes (a worker offers every number up to the processes it can give)."""
    needs: list[str] = [] if config.device == "auto" else [config.device]
    if config.precision != "fp32":
        needs.append(config.precision)
    return needs if config.world_size == 1 else [*needs, f"world_size:{config.world_size}"]


def _stored_idempotency_key(owner: Principal, key: str) -> str:
    """The key as stored: as sent without authentication, else bound to the owner (and hashed to fit)."""
    if owner.owner_id is None:
        return key
    return f"{owner.owner_id}:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _replay(
    session: Session, stored: str, key: str, dataset_id: str, preset_name: str, overrides: dict[str, Any]
) -> Job | None:
    original = session.scalar(select(Job).where(Job.idempotency_key == stored))
    if original is None:
        return None
    named = original.dataset_id == dataset_id or (
        (dataset := session.get(Dataset, original.dataset_id)) is not None and dataset.name == dataset_id
    )
    if not named or (original.preset, original.overrides) != (preset_name, overrides):
        raise Invalid(
            f"Idempotency-Key {key!r} was already used for a different request (job {original.id})",
            field="Idempotency-Key",
            job_id=original.id,
        )
    return original


def training_precision(job: Job) -> str:
    """The precision a job trains (and trained its checkpoints) in; configs from before the field are fp32."""
    return str(job.config.get("precision", "fp32"))


def _visible_job(job: Job | None, job_id: str, viewer: Principal | None) -> Job:
    if job is None or (viewer is not None and not ownership.may_see(viewer, job.owner_id)):
        raise NotFound(f"job {job_id!r} not found")
    return job


def get_job(session: Session, job_id: str, viewer: Principal | None = None) -> Job:
    """A job by id; `NotFound` when there is none or `viewer` may not see it."""
    return _visible_job(session.get(Job, job_id), job_id, viewer)


def check_statuses(statuses: Sequence[str] | None) -> list[str]:
    unknown = sorted(set(statuses or ()) - set(STATUSES))
    if unknown:
        raise Invalid(f"unknown status {', '.join(unknown)}; choose from {', '.join(STATUSES)}", field="status")
    return list(statuses or ())


def name_or_id(q: str, name: Any, row_id: Any) -> Any:
    """The `q` filter of a list: a case-insensitive substring of the name, or exactly the id. A NUL
    character is in no name or id (and PostgreSQL refuses it in a query): nothing matches."""
    if "\x00" in q:
        return false()
    return or_(row_id == q, func.lower(name).contains(q.lower(), autoescape=True))


def list_jobs(
    session: Session,
    statuses: list[str] | None,
    limit: int,
    cursor: str | None,
    viewer: Principal | None = None,
    *,
    q: str | None = None,
    tags: Sequence[str] | None = None,
    dataset: str | None = None,
    preset_name: str | None = None,
    sort: str = NEWEST_FIRST,
) -> tuple[list[Job], str | None]:
    """A page of the jobs `viewer` may see in the order `sort` names (`SORTS`), filtered by status,
    name or id (`q`), tags (all of them), dataset (id or unique name) and preset; and the next cursor."""
    if sort not in SORTS:
        raise Invalid(f"sort must be one of {', '.join(SORTS)}, got {sort[:40]!r}", field="sort")
    stmt = select(Job) if viewer is None else select(Job).where(ownership.visible(viewer, Job.owner_id))
    statuses = check_statuses(statuses)
    if statuses:
        stmt = stmt.where(Job.status.in_(statuses))
    if q:
        stmt = stmt.where(name_or_id(q, Job.name, Job.id))
    for clause in run_metadata.has_job_tags(run_metadata.check_filter_tags(tags)):
        stmt = stmt.where(clause)
    if dataset:
        stmt = stmt.where(Job.dataset_id == find_dataset(session, dataset, viewer).id)
    if preset_name:
        stmt = stmt.where(Job.preset == preset_name)
    value = {"valid_ppl": Job.best_valid_ppl, "test_ppl": Job.test_ppl}.get(sort)
    return sorted_page(session, stmt, sort, Job.created_at, Job.id, limit, cursor, value)


def update_metadata(engine: Engine, job_id: str, values: dict[str, Any], viewer: Principal | None = None) -> Job:
    """Change a job's name, tags or notes (only the fields in `values`), whatever its status."""
    cleaned = run_metadata.clean(values)
    with write_session(engine) as session:
        job = _visible_job(session.get(Job, job_id, with_for_update=True), job_id, viewer)
        run_metadata.apply(session, job, cleaned)
    return job


def queue_position(session: Session, job: Job) -> int | None:
    """How many queued jobs will be claimed before this one (0 = next); None unless queued."""
    return queue_positions(session, [job]).get(job.id)


def queue_positions(session: Session, page: list[Job]) -> dict[str, int]:
    """Queue positions of the queued jobs of one list page, computed once for the whole page.

    Jobs are claimed in (created_at, id) order. One count gives the queued jobs ahead of the page's
    oldest queued job; one range read gives the queued jobs from it to the page's newest (on a page
    that keeps every queued job in its span, those are its own), whose ranks give the rest. Both
    are ranges of the (status, created_at, id) index. A job claimed meanwhile gets no position.
    """
    queued = sorted((job for job in page if job.status == QUEUED), key=lambda job: (job.created_at, job.id))
    if not queued:
        return {}
    oldest, newest = queued[0], queued[-1]
    key = tuple_(Job.created_at, Job.id)
    ahead = session.scalar(
        select(func.count()).select_from(Job).where(Job.status == QUEUED, key < tuple_(oldest.created_at, oldest.id))
    )
    span = session.scalars(
        select(Job.id)
        .where(Job.status == QUEUED, key >= tuple_(oldest.created_at, oldest.id))
        .where(key <= tuple_(newest.created_at, newest.id))
        .order_by(Job.created_at, Job.id)
    )
    on_page = {job.id for job in queued}
    return {job_id: (ahead or 0) + rank for rank, job_id in enumerate(span) if job_id in on_page}


def status_message(job: Job, position: int | None, unmet: list[str] | None = None) -> str:
    """One line on why the job is where it is; `unmet`: what the job needs that no live worker has."""
    if job.status == QUEUED:
        waiting = f"waiting for a worker; {position} job(s) ahead" if position is not None else "waiting for a worker"
        if unmet:
            waiting = f"waiting for a worker with {', '.join(unmet)}: no running worker has it"
        if job.run_after is not None and job.run_after > utcnow():
            waiting += f"; retrying after {job.run_after.isoformat(timespec='seconds')} (backoff)"
        if job.attempt and job.status_note:
            return f"{waiting}; {job.status_note}"
        return f"{waiting} (previous attempt: {job.error})" if job.attempt and job.error else waiting
    if job.status == RUNNING:
        return f"attempt {job.attempt} of {job.max_attempts} running on worker {job.worker_id}"
    if job.status == CANCELING:
        return "cancel requested; the worker stops at the next step boundary"
    if job.status == SUCCEEDED:
        return "finished"
    if job.status == CANCELED:
        return "canceled on request"
    return job.error or "failed"


def cancel(engine: Engine, job_id: str, viewer: Principal | None = None) -> Job:
    """Request cancellation: a queued job is canceled at once, a running one at its next step.

    Idempotent for canceling and canceled jobs; `Conflict` for succeeded or failed ones.
    """
    with write_session(engine) as session:
        job = _visible_job(session.get(Job, job_id, with_for_update=True), job_id, viewer)
        request_cancel(job, f"job {job_id}")
    return job


def request_cancel(row: Job | Scoring, what: str) -> None:
    """The cancel transition of jobs and scorings alike: queued ends canceled at once, running
    becomes canceling (its worker stops at its next step or chunk); canceling and canceled stay;
    `Conflict` once it succeeded or failed."""
    if row.status == QUEUED:
        row.status, row.finished_at = CANCELED, utcnow()
    elif row.status == RUNNING:
        row.status = CANCELING
    elif row.status not in (CANCELING, CANCELED):
        raise Conflict(f"{what} already {row.status}; only queued or running ones can be canceled")


def delete_job(engine: Engine, settings: Settings, job_id: str, viewer: Principal | None = None) -> None:
    """Delete a finished job with its metrics, logs, checkpoints and checkpoint files."""
    with write_session(engine) as session:
        job = _visible_job(session.get(Job, job_id, with_for_update=True), job_id, viewer)
        if job.status not in TERMINAL:
            raise Conflict(f"job {job_id} is {job.status}; cancel it and wait until it is canceled before deleting")
        session.execute(delete(Metric).where(Metric.job_id == job_id))
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        session.execute(delete(JobLog).where(JobLog.job_id == job_id))
        session.execute(delete(JobTag).where(JobTag.job_id == job_id))
        session.delete(job)
    open_storage(settings).delete_tree(checkpoints.job_key(job_id))


def eta_seconds(job: Job) -> float | None:
    """Seconds until a running job is done, from the speed its current epoch trains at (`wps`, words
    per second of this attempt's epoch): the steps left in this and the remaining epochs, plus the
    validation passes and the test run, whose estimated share is scaled by how the measured step
    compares with the estimated one. None when the job is not running or has no speed yet."""
    p, config, est = job.progress or {}, job.config or {}, job.estimate or {}
    wps, steps = p.get("wps"), p.get("steps")
    if job.status != RUNNING or not isinstance(wps, int | float) or wps <= 0 or not steps:
        return None
    step_seconds = config.get("batch_size", 1) * config.get("num_steps", 1) / wps
    estimated_step = est.get("step_seconds") or 0.0
    scale = step_seconds / estimated_step if estimated_step > 0 else 1.0
    valid_pass = max(est.get("epoch_seconds", 0.0) - estimated_step * est.get("steps_per_epoch", 0), 0.0) * scale
    test_pass = est.get("test_seconds", 0.0) * scale
    epoch, epochs = p.get("epoch") or 1, p.get("epochs") or config.get("max_max_epoch", 1)
    later_epochs = max(epochs - epoch, 0) * (steps * step_seconds + valid_pass)
    left = 1.0 - min(max(float(p.get("fraction") or 0.0), 0.0), 1.0)
    phase = p.get("phase")
    if phase == "train":
        remaining = (steps - (p.get("step") or 0)) * step_seconds + valid_pass + later_epochs + test_pass
    elif phase == "validate":
        remaining = left * valid_pass + later_epochs + test_pass
    elif phase == "test":
        remaining = left * test_pass
    else:
        return None
    return round(max(remaining, 0.0), 1)


# Zaremba et al. (2014), Table 1: test perplexity on PTB (the small model is their non-regularized 2x200).
PAPER_TEST_PPL = {"small": 114.5, "medium": 82.7, "large": 78.4}
# PTB as the seed's reader reads it: 929,589 / 73,760 / 82,430 tokens (one <eos> a line), 10,000 types.
PTB_SHAPE = (929_589, 73_760, 82_430, 10_000)
NEUTRAL_FIELDS = ("seed", "device", "world_size")  # placement and seed: the same recipe, the paper's own variance


def is_ptb(dataset: Dataset | None) -> bool:
    """Whether a dataset's token files are PTB's: the builtin PTB corpus, or an upload of its files
    (tokens kept as they are: the ptb or whitespace tokenizer)."""
    return (
        dataset is not None
        and dataset.tokenizer in ("ptb", "whitespace")
        and (dataset.train_tokens, dataset.valid_tokens, dataset.test_tokens, dataset.vocab_size) == PTB_SHAPE
    )


def paper_comparison(job: Job, dataset: Dataset | None) -> dict[str, Any]:
    """The paper's test perplexity for the job's preset, and whether the job's number may stand next
    to it: only an unmodified small, medium or large preset trained on PTB; else why not, in words."""
    published = PAPER_TEST_PPL.get(job.preset)
    if job.preset not in PAPER_PRESETS:
        reason = f"the {job.preset} preset is not one of the paper's (small, medium, large)"
        return {"test_ppl": None, "comparable": False, "reason": reason}
    reasons: list[str] = []
    base = PRESETS[job.preset].to_dict()
    config = job.config or {}
    for name, value in config.items():
        if name in NEUTRAL_FIELDS or base.get(name) == value:
            continue
        if name == "max_steps_per_epoch" and dataset is not None and value is not None:
            full = epoch_size(dataset.train_tokens, config.get("batch_size", 20), config.get("num_steps", 20))
            if value < full:
                reasons.append(f"max_steps_per_epoch caps each epoch at {value:,} of {full:,} steps")
            continue
        if name == "max_eval_tokens" and value is not None:
            reasons.append(
                f"max_eval_tokens evaluates only the first {value:,} tokens of the validation and test splits"
            )
            continue
        reasons.append(f"{name} is {value!r}, not the {job.preset} preset's {base.get(name)!r}")
    if dataset is None or not is_ptb(dataset):
        reasons.insert(0, f"trained on {dataset.name if dataset else job.dataset_id}, not PTB")
    if not reasons:
        return {"test_ppl": published, "comparable": True, "reason": None}
    reason = "; ".join(reasons)
    shown = reason if len(reason) <= 500 else reason[:497] + "..."
    return {"test_ppl": published, "comparable": False, "reason": shown}
