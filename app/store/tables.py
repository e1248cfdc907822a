"""The schema (SQLAlchemy 2). Alembic migrations in `migrations/` own it; the app never calls create_all.

Timestamps are timezone-aware UTC. Ids are short prefixed strings (`job_...`, `ds_...`, `ckpt_...`,
`key_...`). `owner_id` is the id of the API key that created a row (NULL: created with
authentication off, or before keys existed; such rows are visible to admin keys only). Keys are
revoked, never deleted, so an owner id always names a key; it is not a foreign key so that adding
it needs no table rebuild.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware datetimes (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Dataset(Base):
    """A corpus: an uploaded train/valid/test triple, or a server-side folder exposed by name."""

    __tablename__ = "datasets"
    __table_args__ = (
        Index("ix_datasets_created_id", "created_at", "id"),  # keyset pages
        Index("ix_datasets_owner_created", "owner_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(20))  # "upload" or "builtin"
    path: Mapped[str] = mapped_column(Text)  # folder holding train/valid/test text
    train_tokens: Mapped[int] = mapped_column(Integer)
    valid_tokens: Mapped[int] = mapped_column(Integer)
    test_tokens: Mapped[int] = mapped_column(Integer)
    vocab_size: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner_id: Mapped[str | None] = mapped_column(String(40))
    # Set when a dataset that finished jobs still name is deleted: the row stays for them, hidden.
    deleted_at: Mapped[datetime | None]
    # the earlier name of the tokenizer: "ptb", "wikitext", "plain" (whitespace), or a subword kind
    convention: Mapped[str] = mapped_column(String(20), default="plain", server_default="plain")
    # How the text is cut into tokens (model/tokenizers.py): whitespace, ptb, wikitext, bpe or unigram,
    # with its options; `tokenizer_spec` is the tokenizer's own description (its vocabulary size...).
    tokenizer: Mapped[str] = mapped_column(String(20), default="whitespace", server_default="whitespace")
    lowercase: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    min_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    tokenizer_spec: Mapped[dict[str, Any] | None]
    # The tokenized corpus' folder, what jobs train on (with tokenizer.json); NULL for datasets made
    # before tokenizers, whose `path` holds text already cut on whitespace.
    tokens_path: Mapped[str | None] = mapped_column(Text)
    # Per split: tokens, words, bytes, lines, unk and unk_rate (app/training/datasets.py SplitStats)
    split_stats: Mapped[dict[str, Any] | None]


class Job(Base):
    """A training run. `attempt` counts claims; every worker write is conditioned on it."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created_id", "created_at", "id"),  # keyset pages of every job
        Index("ix_jobs_status_created_id", "status", "created_at", "id"),  # claims, queue positions, status pages
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),  # expired leases
        Index("ix_jobs_owner_created", "owner_id", "created_at"),
        Index("ix_jobs_dataset_created_id", "dataset_id", "created_at", "id"),  # a dataset's jobs
        Index("ix_jobs_best_valid_id", "best_valid_ppl", "id"),  # sorted by validation perplexity
        Index("ix_jobs_test_ppl_id", "test_ppl", "id"),  # sorted by test perplexity
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # queued running canceling succeeded failed canceled
    preset: Mapped[str] = mapped_column(String(20))
    overrides: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]]  # the full ModelConfig the job trains with
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)  # epoch, step, steps, fraction, lr, wps, ppl
    latest_train_ppl: Mapped[float | None] = mapped_column(Float)
    latest_valid_ppl: Mapped[float | None] = mapped_column(Float)
    best_valid_ppl: Mapped[float | None] = mapped_column(Float)
    test_ppl: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    # What a worker must advertise to claim the job (its device: "cuda", "cpu"; none for "auto").
    requirements: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    run_after: Mapped[datetime | None]  # held back until then after a transient failure (backoff)
    estimate: Mapped[dict[str, Any] | None]  # steps_per_epoch, step_seconds, epoch_seconds at submission
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    owner_id: Mapped[str | None] = mapped_column(String(40))
    # the vocabulary the job trains with and the <unk> rates of its splits, once a worker read the corpus
    vocabulary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What its owner calls it: a name, tags (in the order given; `job_tags` holds them for filtering)
    # and free-form notes.
    name: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    notes: Mapped[str | None] = mapped_column(Text)
    # Why a queued job is back in the queue when that is no error: a planned hand-back (the worker
    # or the service stopping), with where it resumes. Cleared when a worker claims it.
    status_note: Mapped[str | None] = mapped_column(Text)


class Scoring(Base):
    """A whole text scored line by line in the background: an uploaded file or a dataset split.

    Leased and attempt-fenced like a job. `lines_done` lines are in the results file, which holds
    exactly `bytes_done` bytes of them; a resumed attempt cuts the file there and goes on.
    """

    __tablename__ = "scorings"
    __table_args__ = (
        Index("ix_scorings_created_id", "created_at", "id"),  # keyset pages of every scoring
        Index("ix_scorings_status_created_id", "status", "created_at", "id"),  # claims in queue order
        Index("ix_scorings_status_lease", "status", "lease_expires_at"),  # expired leases
        Index("ix_scorings_owner_created", "owner_id", "created_at"),  # a key's scorings, its quotas
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(40))  # the API key that submitted it
    status: Mapped[str] = mapped_column(String(20))  # queued running canceling succeeded failed canceled
    model: Mapped[str] = mapped_column(String(200))  # the name as given
    checkpoint_id: Mapped[str] = mapped_column(String(40))  # what it resolved to at submission
    checkpoint_path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))  # "upload" or "dataset"
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    split: Mapped[str | None] = mapped_column(String(10))
    input_path: Mapped[str] = mapped_column(Text)
    # bytes of an uploaded text (counted in the key's storage with the results); 0 for a dataset split
    input_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # log10, score_eos, normalize, precision
    total_lines: Mapped[int] = mapped_column(Integer)
    lines_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    sums: Mapped[dict[str, Any]] = mapped_column(default=dict)  # running sums of the aggregates
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    name: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    notes: Mapped[str | None] = mapped_column(Text)
    # Why a queued scoring is back in the queue when that is no error: a planned hand-back, with the
    # line it resumes at. Cleared when a worker claims it.
    status_note: Mapped[str | None] = mapped_column(Text)


# Tags are kept twice: in the row's `tags` (JSON, the order its owner gave, what the API shows) and
# one row per tag in these tables, which is what list filters query. JSON containment is a different
# operator on each database (and PostgreSQL indexes only jsonb), while `EXISTS (... tag = :t)` on a
# (owner row, tag) primary key is one index seek on SQLite and PostgreSQL alike; the (tag, row)
# index finds a rare tag's rows directly.


class JobTag(Base):
    """One tag of a job (its `tags` in a form list filters can query)."""

    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_tag", "tag", "job_id"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(50), primary_key=True)


class ScoringTag(Base):
    """One tag of a scoring."""

    __tablename__ = "scoring_tags"
    __table_args__ = (Index("ix_scoring_tags_tag", "tag", "scoring_id"),)

    scoring_id: Mapped[str] = mapped_column(ForeignKey("scorings.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(50), primary_key=True)


class Metric(Base):
    """One point of a job's metric history, in MLflow's shape (key, value, step, timestamp); at most
    one point per job, key and step."""

    __tablename__ = "metrics"
    __table_args__ = (
        Index("ix_metrics_job_id", "job_id", "id"),  # a job's history in recorded order, event streams
        Index("ix_metrics_job_key_id", "job_id", "key", "id"),  # one key's history in recorded order
        Index("ix_metrics_job_key_step", "job_id", "key", "step", "id"),  # downsampling: seeks by step
        Index("uq_metrics_job_key_step", "job_id", "key", "step", unique=True),  # one point per key and step
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(50))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer)  # global training step
    epoch: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[int] = mapped_column(BigInteger)  # milliseconds since the epoch, as MLflow
    attempt: Mapped[int] = mapped_column(Integer)


class JobLog(Base):
    """One line of a job's log, written by the worker that held the job (at most a bounded number a job)."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    level: Mapped[str] = mapped_column(String(10))  # INFO, WARNING or ERROR
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """A checkpoint file written by a worker for a job."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        Index("ix_checkpoints_job", "job_id", "created_at"),
        Index("ix_checkpoints_owner", "owner_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)  # completed epochs
    step: Mapped[int] = mapped_column(Integer)  # global training step
    kind: Mapped[str] = mapped_column(String(20))  # "epoch", "interrupt" (cancel/shutdown) or "final"
    valid_ppl: Mapped[float | None] = mapped_column(Float)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner_id: Mapped[str | None] = mapped_column(String(40))  # the job's owner


class ModelAlias(Base):
    """A name (`default`, `ptb-small`) for a job (its best checkpoint) or one checkpoint."""

    __tablename__ = "model_aliases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    target: Mapped[str] = mapped_column(String(40))  # a job id or a checkpoint id
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Worker(Base):
    """A running worker process; its heartbeat tells /readyz that jobs will be picked up."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    current_job_id: Mapped[str | None] = mapped_column(String(40))
    # What it can run: devices ("cpu", "cuda") and precisions ("bf16"); jobs' requirements match these.
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]


class ApiKey(Base):
    """An API key: only the sha256 of the secret is stored, with a short prefix to recognise it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(10))  # read, write or admin
    prefix: Mapped[str] = mapped_column(String(20))  # the secret's first characters, for display
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class BrowserSession(Base):
    """A dashboard login (`POST /v1/session`): the cookie holds a random secret, only its sha256 is
    stored. It ends at `expires_at` (pushed on while it is used), on logout, or when its key is revoked."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_key_created", "key_id", "created_at"),)  # a key's sessions

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # `ses_...`, shown in listings
    key_id: Mapped[str] = mapped_column(String(40))  # the API key it logged in with
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the cookie's value
    user_agent: Mapped[str | None] = mapped_column(String(200))  # the browser's, cut to 200 characters
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]  # logged out, or its key revoked
