"""The model registry: which checkpoint a model name means, and a bounded cache of loaded models.

A model is named by a job id (`job_...`: the job's best checkpoint, the one with the lowest
validation perplexity, or its latest while none has been validated), by a checkpoint id
(`ckpt_...`) or by an alias (`default`, `ptb-small`) that points at either. Names are resolved on
every request, from the database and not from a cache, so a job that is still training serves its
newest best checkpoint as soon as the worker records it, and a moved or deleted alias, a deleted
job or checkpoint is seen by the next request of every API process. The lookup reads only the
columns it needs, in one statement (two for an alias), without building ORM objects: it is part of
every inference request.

Who may use a model follows `app.auth.ownership`: a job or checkpoint id only for a key that may
see the job; an alias (made by an admin) for every key, whoever owns the job behind it.

Loaded models live in a least-recently-used cache keyed by checkpoint id and the file's mtime and
size (a rewritten file is reloaded). Files are read with `weights_only=True`; a missing or corrupt
file is a `Conflict` for that model only, and the server keeps serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import anyio
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import ownership
from app.auth.principal import Principal
from app.errors import Conflict, Invalid, NotFound, ServiceError
from app.store.db import write_session
from app.store.storage import MissingObject, Storage, mark_used
from app.store.tables import Checkpoint, Job, ModelAlias, utcnow
from app.training import checkpoints
from model.checkpoint import CheckpointError, load, load_model, tokenizer_of
from model.config import ModelConfig
from model.data import Vocabulary
from model.network import LSTMLanguageModel
from model.tokenizers import Tokenizer

JOB_PREFIX, CHECKPOINT_PREFIX = "job_", "ckpt_"
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_ALIAS_RE = re.compile(ALIAS_PATTERN)
RESERVED_ALIASES = frozenset({"aliases"})  # would shadow GET /v1/models/aliases
DEFAULT_ALIAS = "default"  # the model of requests that name none (the tokenizer endpoints of evaluation clients)


@dataclass(frozen=True)
class ModelRef:
    """What a model name resolves to: one checkpoint of one job."""

    name: str  # the name as asked for
    job_id: str
    job_status: str
    checkpoint_id: str
    path: str  # the checkpoint file's storage key
    epoch: int
    step: int
    kind: str
    valid_ppl: float | None
    created_at: datetime  # when the checkpoint was written


@dataclass
class LoadedModel:
    """A model in memory. `lock` serialises its forwards: one forward already uses every core."""

    checkpoint_id: str
    model: LSTMLanguageModel
    vocab: Vocabulary
    config: ModelConfig
    tokenizer: Tokenizer = field(default_factory=Tokenizer)  # how its training text was cut (model/tokenizers.py)
    batchers: dict[str, Any] = field(default_factory=dict, repr=False)  # precision -> its ScoreBatcher
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class _JobRow:
    """The columns of a job that resolving a name reads."""

    id: str
    status: str
    owner_id: str | None


@dataclass(frozen=True)
class _CheckpointRow:
    """The columns of a checkpoint that resolving a name reads."""

    id: str
    epoch: int
    step: int
    kind: str
    valid_ppl: float | None
    path: str
    created_at: datetime

    @classmethod
    def of(cls, row: Any, prefix: str = "") -> _CheckpointRow:
        """From a row of `_CHECKPOINT_COLUMNS`, each labelled `prefix` and its name."""
        return cls(*(getattr(row, prefix + c.key) for c in _CHECKPOINT_COLUMNS))


@dataclass(frozen=True)
class AliasInfo:
    name: str
    target: str
    updated_at: datetime


def _ref(name: str, job: Job | _JobRow, row: Checkpoint | _CheckpointRow) -> ModelRef:
    """The reference of checkpoint `row` of `job`."""
    return ModelRef(
        name=name,
        job_id=job.id,
        job_status=job.status,
        checkpoint_id=row.id,
        path=row.path,
        epoch=row.epoch,
        step=row.step,
        kind=row.kind,
        valid_ppl=row.valid_ppl,
        created_at=row.created_at,
    )


def served_checkpoint(rows: list[Checkpoint]) -> Checkpoint | None:
    """The checkpoint a job id serves: its best validated one, else its latest (rows oldest first)."""
    return checkpoints.best_of(rows) or (rows[-1] if rows else None)


# What resolving a name reads: a job's id, status and owner, and its checkpoints' columns of a
# `ModelRef` (`checkpoints.ordered`'s order), as plain rows.
_JOB_COLUMNS = (Job.id, Job.status, Job.owner_id)
_CHECKPOINT_COLUMNS = (
    Checkpoint.id,
    Checkpoint.epoch,
    Checkpoint.step,
    Checkpoint.kind,
    Checkpoint.valid_ppl,
    Checkpoint.path,
    Checkpoint.created_at,
)
_ALIAS_TARGET = select(ModelAlias.target)
_CHECKPOINT_AND_JOB = select(*_CHECKPOINT_COLUMNS, *(c.label(f"job_{c.key}") for c in _JOB_COLUMNS)).join(
    Job, Job.id == Checkpoint.job_id
)
_JOB_AND_CHECKPOINTS = (
    select(*_JOB_COLUMNS, *(c.label(f"ckpt_{c.key}") for c in _CHECKPOINT_COLUMNS))
    .outerjoin(Checkpoint, Checkpoint.job_id == Job.id)
    .order_by(Checkpoint.step, Checkpoint.created_at, Checkpoint.id)
)


def resolve(session: Session, name: str, viewer: Principal | None = None) -> ModelRef:
    """The checkpoint `name` means; `NotFound` when there is no such model or `viewer` may not use it."""
    if _ALIAS_RE.fullmatch(name) is None:  # no job, checkpoint or alias is named so (a NUL byte, ...)
        raise NotFound(f"model {name!r} not found: not a job id, checkpoint id or alias", model=name)
    if session.new or session.dirty or session.deleted:
        session.flush()  # what the caller changed in this transaction counts, as with ORM queries
    connection = session.connection()
    target = name
    if not name.startswith((JOB_PREFIX, CHECKPOINT_PREFIX)):
        found = connection.execute(_ALIAS_TARGET.where(ModelAlias.name == name)).scalar()
        if found is None:
            raise NotFound(f"model {name!r} not found: not a job id, checkpoint id or alias", model=name)
        target, viewer = found, None  # an alias publishes its model to every key

    def hidden(owner_id: str | None) -> bool:
        return viewer is not None and not ownership.may_see(viewer, owner_id)

    if target.startswith(CHECKPOINT_PREFIX):
        row = connection.execute(_CHECKPOINT_AND_JOB.where(Checkpoint.id == target)).first()
        if row is None or hidden(row.job_owner_id):
            raise NotFound(f"model {name!r} not found: no checkpoint {target!r}", model=name)
        return _ref(name, _JobRow(row.job_id, row.job_status, row.job_owner_id), _CheckpointRow.of(row))
    rows = connection.execute(_JOB_AND_CHECKPOINTS.where(Job.id == target)).all()
    if not rows or hidden(rows[0].owner_id):
        raise NotFound(f"model {name!r} not found: no job {target!r}", model=name)
    job = _JobRow(rows[0].id, rows[0].status, rows[0].owner_id)
    kept = [_CheckpointRow.of(r, "ckpt_") for r in rows if r.ckpt_id is not None]
    # `checkpoints.best_of` reads only `valid_ppl`, which these rows have
    served = served_checkpoint(cast(list[Checkpoint], kept))
    if served is None:
        raise Conflict(f"job {job.id} has no checkpoint yet (status {job.status})", model=name)
    return _ref(name, job, served)


def same_model(session: Session, viewer: Principal, scoped: str, named: str | None) -> None:
    """`Invalid` when a request under the URL of model `scoped` names another model in its body
    (`named`: one that is not the same checkpoint); None names none."""
    if named is None or named == scoped:
        return
    here = resolve(session, scoped, viewer)
    try:
        there: ModelRef | None = resolve(session, named, viewer)
    except (NotFound, Conflict):
        there = None
    if there is None or there.checkpoint_id != here.checkpoint_id:
        raise Invalid(
            f"model: this URL serves {scoped!r}, and the request names {named!r}, another model; "
            "name the URL's model or leave model out",
            field="model",
        )


def servable_models(session: Session, viewer: Principal | None = None) -> list[tuple[ModelRef, list[str]]]:
    """Every job `viewer` may see that has a checkpoint, newest first, with the aliases that point at it
    or at its served checkpoint."""
    by_job: dict[str, list[Checkpoint]] = {}
    stmt = select(Checkpoint)
    if viewer is not None:
        stmt = stmt.join(Job, Job.id == Checkpoint.job_id).where(ownership.visible(viewer, Job.owner_id))
    for row in session.scalars(stmt.order_by(Checkpoint.step, Checkpoint.created_at, Checkpoint.id)):
        by_job.setdefault(row.job_id, []).append(row)
    aliases = list_aliases(session)
    jobs = session.scalars(select(Job).where(Job.id.in_(by_job)).order_by(Job.created_at.desc(), Job.id))
    listed: list[tuple[ModelRef, list[str]]] = []
    for job in jobs:
        served = served_checkpoint(by_job[job.id])
        assert served is not None  # the job has rows
        names = [a.name for a in aliases if a.target in (job.id, served.id)]
        listed.append((_ref(job.id, job, served), names))
    return listed


# --- aliases ---


def check_alias_name(name: str) -> None:
    """`Invalid` unless `name` can be an alias (and cannot be mistaken for an id)."""
    if not _ALIAS_RE.fullmatch(name) or name.startswith((JOB_PREFIX, CHECKPOINT_PREFIX)) or name in RESERVED_ALIASES:
        raise Invalid(
            f"alias {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, not starting with {JOB_PREFIX!r} or {CHECKPOINT_PREFIX!r}, and not {', '.join(RESERVED_ALIASES)}"
        )


def set_alias(engine: Engine, name: str, target: str) -> AliasInfo:
    """Point alias `name` at a job or checkpoint id (created or moved); `NotFound` if the target is unknown.

    One write transaction from its first read (`write_session`): on SQLite a transaction that read
    first could not write once a worker had written meanwhile ("database is locked" at once)."""
    check_alias_name(name)
    table = Checkpoint if target.startswith(CHECKPOINT_PREFIX) else Job if target.startswith(JOB_PREFIX) else None
    with write_session(engine) as session:
        if table is None or session.get(table, target) is None:
            raise NotFound(f"alias target {target!r} not found: give a job id or a checkpoint id", target=target)
        row = session.get(ModelAlias, name)
        if row is None:
            row = ModelAlias(name=name, target=target, updated_at=utcnow())
            session.add(row)
        else:
            row.target, row.updated_at = target, utcnow()
        return AliasInfo(row.name, row.target, row.updated_at)


def get_alias(session: Session, name: str) -> AliasInfo:
    """One alias; `NotFound` if there is none by that name."""
    row = session.get(ModelAlias, name)
    if row is None:
        raise NotFound(f"alias {name!r} not found")
    return AliasInfo(row.name, row.target, row.updated_at)


def list_aliases(session: Session) -> list[AliasInfo]:
    """All aliases by name."""
    rows = session.scalars(select(ModelAlias).order_by(ModelAlias.name))
    return [AliasInfo(r.name, r.target, r.updated_at) for r in rows]


def delete_alias(engine: Engine, name: str) -> None:
    """Remove an alias; `NotFound` if there is none by that name."""
    with write_session(engine) as session:
        get_alias(session, name)
        session.execute(delete(ModelAlias).where(ModelAlias.name == name))


# --- resolving in rounds ---

_ViewerKey = tuple[str, str | None, bool]  # a name and what `ownership.may_see` reads of a viewer


class Resolver:
    """Model names of concurrent requests resolved in rounds, on the event loop's side.

    Every request's name is looked up by a read that starts after the request arrived, so a change
    committed before it (by this process, another API process or a worker) is seen, exactly as
    with a query of its own. But the requests that arrive while a round runs share the next one:
    one worker thread, one session and one query per distinct name and viewer, instead of one of
    each per request. Not thread-safe: use it from one event loop.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._waiting: dict[_ViewerKey, tuple[Principal, list[asyncio.Future[ModelRef]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds run (for tests)

    async def resolve(self, name: str, viewer: Principal) -> ModelRef:
        """What `resolve(session, name, viewer)` answers, read after this call began."""
        future: asyncio.Future[ModelRef] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((name, viewer.key_id, viewer.is_admin), (viewer, []))[1].append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        batch: dict[_ViewerKey, tuple[Principal, list[asyncio.Future[ModelRef]]]] = {}
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                found: dict[_ViewerKey, ModelRef | Exception]
                try:
                    found = dict(await anyio.to_thread.run_sync(self._lookup, {k: v[0] for k, v in batch.items()}))
                except Exception as exc:  # the database failed: every request of the round gets the error
                    found = dict.fromkeys(batch, exc)
                for key, (_, futures) in batch.items():
                    for future in futures:
                        if future.done():  # its request went away
                            continue
                        result = found[key]
                        if isinstance(result, BaseException):
                            future.set_exception(result)
                        else:
                            future.set_result(result)
                self.rounds += 1
                batch = {}
        finally:
            self._task = None
            for _, futures in [*batch.values(), *self._waiting.values()]:  # cancelled (shutdown)
                for future in futures:
                    if not future.done():
                        future.cancel()

    def _lookup(self, viewers: dict[_ViewerKey, Principal]) -> dict[_ViewerKey, ModelRef | ServiceError]:
        found: dict[_ViewerKey, ModelRef | ServiceError] = {}
        with self.sessions() as session:
            for key, viewer in viewers.items():
                try:
                    found[key] = resolve(session, key[0], viewer)
                except ServiceError as exc:  # not found, not servable: that name's requests get it
                    found[key] = exc
        return found


# --- loaded models ---


class ModelCache:
    """Loaded models, at most `capacity`, the least recently used dropped first. Thread-safe."""

    def __init__(self, capacity: int, storage: Storage, device: str = "cpu") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.storage = storage  # where checkpoint files are (a local copy is read)
        self.device = device
        self._models: OrderedDict[tuple[str, int, int], LoadedModel] = OrderedDict()
        self._paths: dict[str, Path] = {}  # checkpoint id -> the local file its model was read from
        self._lock = threading.Lock()
        self._hits = self._misses = self._loads = 0  # since start, for /metrics

    def __len__(self) -> int:
        return len(self._models)

    def stats(self) -> dict[str, int]:
        """Hits, misses and loads since this cache was made, and the models in it now."""
        with self._lock:
            return {"hits": self._hits, "misses": self._misses, "loads": self._loads, "size": len(self._models)}

    def cached_ids(self) -> list[str]:
        """Checkpoint ids in memory, least recently used first."""
        with self._lock:
            return [key[0] for key in self._models]

    def loaded(self, ref: ModelRef) -> LoadedModel | None:
        """The model of `ref` if it is in memory and the local file it was read from is unchanged;
        None otherwise. It asks nothing of the storage (no download, no request): one `stat`, so an
        event loop may call it."""
        with self._lock:
            path = self._paths.get(ref.checkpoint_id)
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return None
        with contextlib.suppress(OSError):  # a use, as a read through the storage's cache counts one
            mark_used(path, stat.st_mtime_ns)
        return self._cached((ref.checkpoint_id, stat.st_mtime_ns, stat.st_size))

    def _cached(self, key: tuple[str, int, int]) -> LoadedModel | None:
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._hits += 1
                self._models.move_to_end(key)
            return loaded

    def get(self, ref: ModelRef) -> LoadedModel:
        """The model of `ref`, loaded on first use; `Conflict` if its file is missing or unusable."""
        try:
            path = self.storage.local_path(ref.path)
            stat = path.stat()
        except (MissingObject, ValueError, OSError):
            raise Conflict(
                f"checkpoint file missing for {ref.checkpoint_id} (model {ref.name!r})", model=ref.name
            ) from None
        key = (ref.checkpoint_id, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            self._paths[ref.checkpoint_id] = path
        loaded = self._cached(key)
        if loaded is not None:
            return loaded
        with self._lock:
            self._misses += 1
        # Read outside the lock: a slow load must not hold up requests for models in memory.
        loaded = self._load(ref, path)
        with self._lock:
            self._loads += 1
            for stale in [k for k in self._models if k[0] == ref.checkpoint_id and k != key]:
                del self._models[stale]  # the file was rewritten
            loaded = self._models.setdefault(key, loaded)  # another thread may have loaded it too
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._paths.pop(self._models.popitem(last=False)[0][0], None)
        return loaded

    def _load(self, ref: ModelRef, path: Path) -> LoadedModel:
        try:
            payload = load(path)
            model, vocab, config = load_model(payload, self.device)
        except CheckpointError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            raise Conflict(f"checkpoint {ref.checkpoint_id} is unusable: {reason}", model=ref.name) from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a readable file that is not a model
            raise Conflict(
                f"checkpoint {ref.checkpoint_id} is unusable: {type(exc).__name__} while building the model",
                model=ref.name,
            ) from None
        model.requires_grad_(False)
        try:
            tokenizer = tokenizer_of(payload)
        except CheckpointError as exc:
            raise Conflict(f"checkpoint {ref.checkpoint_id} is unusable: {exc}", model=ref.name) from None
        return LoadedModel(ref.checkpoint_id, model, vocab, config, tokenizer)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._paths.clear()
