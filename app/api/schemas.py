"""Request and response bodies of the training API (apart from the tables they are read from)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.store.tables import Checkpoint, Dataset, Job


class ProblemDetail(BaseModel):
    """An RFC 9457 problem detail, the body of every error."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json bodies for these status codes."""
    return {code: {"model": ProblemDetail, "content": {"application/problem+json": {}}} for code in codes}


# --- datasets ---


class DatasetOut(BaseModel):
    id: str
    name: str
    source: str = Field(description="upload or builtin")
    train_tokens: int = Field(description="tokens of the training split, one <eos> per line included")
    valid_tokens: int
    test_tokens: int
    vocab_size: int = Field(description="word types of the training split, counting <eos> and <unk>")
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetOut:
        return cls.model_validate(dataset, from_attributes=True)


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class CorpusRegistration(BaseModel):
    """A server-side corpus folder: a configured root and an optional folder inside it."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="a name from GET /v1/datasets/roots", examples=["ptb"])
    path: str = Field("", description="a folder inside the root; empty for the root itself")
    name: str | None = Field(None, max_length=200)


class CorpusRoots(BaseModel):
    roots: list[str]


# --- jobs ---


class JobCreate(BaseModel):
    """A training job: a dataset, a preset and field overrides of its config."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(examples=["ds_0123456789abcdef"])
    preset: str = Field("small", description="small, medium, large or test", examples=["small"])
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="config fields to change, e.g. max_max_epoch, hidden_size, seed, max_steps_per_epoch",
        examples=[{"max_max_epoch": 1, "max_steps_per_epoch": 200}],
    )


class Progress(BaseModel):
    """Where a running job stands; `fraction` is of the current epoch."""

    model_config = ConfigDict(extra="ignore")

    phase: str | None = Field(None, description="train, validate or test")
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    global_step: int | None = None
    fraction: float | None = None
    lr: float | None = None
    wps: float | None = Field(None, description="training words per second this epoch")
    train_ppl_running: float | None = Field(None, description="training perplexity of this epoch so far")


class JobOut(BaseModel):
    id: str
    status: str = Field(description="queued, running, canceling, succeeded, failed or canceled")
    message: str = Field(description="why the job is where it is")
    dataset_id: str
    preset: str
    overrides: dict[str, Any]
    config: dict[str, Any] = Field(description="the full model config the job trains with")
    attempt: int = Field(description="claims so far; every worker write carries it")
    max_attempts: int
    queue_position: int | None = Field(description="queued jobs ahead of this one, while queued")
    progress: Progress | None
    latest_train_ppl: float | None
    latest_valid_ppl: float | None
    best_valid_ppl: float | None
    test_ppl: float | None
    error: str | None = Field(description="why the job failed (or why its last attempt ended)")
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, job: Job, queue_position: int | None, message: str) -> JobOut:
        return cls(
            id=job.id,
            status=job.status,
            message=message,
            dataset_id=job.dataset_id,
            preset=job.preset,
            overrides=job.overrides,
            config=job.config,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            queue_position=queue_position,
            progress=Progress.model_validate(job.progress) if job.progress else None,
            latest_train_ppl=job.latest_train_ppl,
            latest_valid_ppl=job.latest_valid_ppl,
            best_valid_ppl=job.best_valid_ppl,
            test_ppl=job.test_ppl,
            error=job.error,
            worker_id=job.worker_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


# --- metrics ---


class MetricOut(BaseModel):
    """One point of a metric's history, in MLflow's shape."""

    key: str
    value: float
    step: int = Field(description="global training step")
    timestamp: int = Field(description="milliseconds since the Unix epoch")


class MetricPage(BaseModel):
    metrics: list[MetricOut]
    next_page_token: str | None = Field(description="pass as `page_token` for the next page; null on the last")


# --- checkpoints ---


class CheckpointOut(BaseModel):
    id: str
    job_id: str
    epoch: int = Field(description="completed epochs")
    step: int = Field(description="global training step")
    kind: str = Field(description="epoch, interrupt (cancel or shutdown) or final")
    precision: str = Field(description="the precision that trained it (fp32, bf16 or tf32); the weights are float32")
    valid_ppl: float | None
    is_best: bool = Field(description="the lowest validation perplexity of the job")
    size_bytes: int
    attempt: int
    created_at: datetime
    download_url: str

    @classmethod
    def of(cls, row: Checkpoint, best_id: str | None, precision: str) -> CheckpointOut:
        return cls(
            id=row.id,
            job_id=row.job_id,
            epoch=row.epoch,
            step=row.step,
            kind=row.kind,
            precision=precision,
            valid_ppl=row.valid_ppl,
            is_best=row.id == best_id,
            size_bytes=row.size_bytes,
            attempt=row.attempt,
            created_at=row.created_at,
            download_url=f"/v1/jobs/{row.job_id}/checkpoints/{row.id}/file",
        )


class CheckpointList(BaseModel):
    items: list[CheckpointOut]
    best_id: str | None


# --- health ---


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]
