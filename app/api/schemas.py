"""Request and response bodies of the training API (apart from the tables they are read from)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.store.tables import Checkpoint, Dataset, Job
from app.training.jobs import eta_seconds, paper_comparison
from app.training.run_metadata import MAX_NAME, MAX_NOTES, MAX_TAG, MAX_TAGS, TAG_PATTERN
from model.tokenizers import SUBWORD


class ProblemDetail(BaseModel):
    """An RFC 9457 problem detail, the body of every error."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str


# What every inference route can answer besides 200: malformed JSON, unknown model, unusable
# checkpoint, body too large, invalid input, server busy (with Retry-After).
INFERENCE_PROBLEMS = (400, 404, 409, 413, 422, 503)


def _lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


class RequestModel(BaseModel):
    """Base of every request body: text must be Unicode, so a lone surrogate (`"\\ud800"`, valid
    JSON but no character) is refused with 422 instead of failing in the database or the encoder."""

    @model_validator(mode="before")
    @classmethod
    def _unicode_only(cls, data: Any) -> Any:
        if _lone_surrogate(data):
            raise ValueError("text must be valid Unicode: a lone surrogate (\\ud800-\\udfff) is not a character")
        return data


# The query parameters of every list route paged by (created_at, id): newest first.
PageLimit = Annotated[int, Query(ge=1, le=200, description="items on a page")]
PageCursor = Annotated[
    str | None,
    Query(
        description="next_cursor of the previous page: an opaque position (url-safe base64) only this API makes",
        # Stated; the decoder refuses what it cannot read. No pattern can say what a cursor is (one that
        # `encode_cursor` made): the format names it, a position any list route's next_cursor could give.
        json_schema_extra={"pattern": r"^[A-Za-z0-9_=-]*$", "format": "page-cursor"},
    ),
]


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list: its items and where the next page starts. Each resource names its own
    (`class JobPage(Page[JobOut])`), which is the name its OpenAPI schema gets."""

    items: list[ItemT]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json bodies for these status codes."""
    return {code: {"model": ProblemDetail, "content": {"application/problem+json": {}}} for code in codes}


# --- datasets ---


class SplitStatsOut(BaseModel):
    tokens: int = Field(description="tokens as training reads them, one <eos> per line included")
    words: int = Field(description="whitespace-separated words of the raw text: what word perplexity divides by")
    bytes: int = Field(description="UTF-8 bytes of the raw text's lines: what bits per byte divides by")
    lines: int
    unk: int = Field(description="tokens that are <unk> under the dataset's vocabulary (0 for a subword tokenizer)")
    unk_rate: float


class TokenizerOut(BaseModel):
    kind: str = Field(description="whitespace, ptb, wikitext, bpe or unigram")
    lowercase: bool
    min_count: int | None = Field(None, description="word-level: training words seen fewer times are <unk>")
    vocab_size: int | None = Field(None, description="subword: the pieces of the trained model")


class DatasetOut(BaseModel):
    id: str
    name: str
    source: str = Field(description="upload or builtin")
    train_tokens: int = Field(description="tokens of the training split, one <eos> per line included")
    valid_tokens: int
    test_tokens: int
    vocab_size: int = Field(
        description="the vocabulary a job trains with: every training word type seen min_count times, counting "
        "<eos> and <unk>, unless a job's vocab_size caps it; for a subword tokenizer, every piece and <eos>"
    )
    tokenizer: TokenizerOut = Field(description="how the raw text is cut into tokens, at upload and for every model")
    splits: dict[str, SplitStatsOut] | None = Field(
        description="per split (train, valid, test): tokens, words, bytes, lines and <unk>; null when the "
        "dataset's files were gone when it was upgraded"
    )
    convention: str = Field(description="deprecated: the tokenizer's earlier name (plain for whitespace)")
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetOut:
        spec = dict(dataset.tokenizer_spec or {})
        tokenizer = TokenizerOut(
            kind=dataset.tokenizer,
            lowercase=dataset.lowercase,
            min_count=None if dataset.tokenizer in SUBWORD else dataset.min_count,
            vocab_size=spec.get("vocab_size") if dataset.tokenizer in SUBWORD else None,
        )
        return cls(
            id=dataset.id,
            name=dataset.name,
            source=dataset.source,
            train_tokens=dataset.train_tokens,
            valid_tokens=dataset.valid_tokens,
            test_tokens=dataset.test_tokens,
            vocab_size=dataset.vocab_size,
            tokenizer=tokenizer,
            splits=dataset.split_stats,
            convention=dataset.convention,
            size_bytes=dataset.size_bytes,
            created_at=dataset.created_at,
        )


class DatasetPage(Page[DatasetOut]):
    pass


TokenizerKind = Literal["whitespace", "ptb", "wikitext", "bpe", "unigram"]
TOKENIZER_DESCRIPTION = (
    "how the raw text is cut into tokens: whitespace, ptb (Treebank tokens, lower case, numbers as N), "
    "wikitext (Moses-style, case kept, @-@), or an open-vocabulary subword model trained on the training "
    "split, bpe or unigram; left out: detected from the training text (ptb, wikitext, else whitespace)"
)


class CorpusRegistration(RequestModel):
    """A server-side corpus folder: a configured root and an optional folder inside it."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(max_length=200, description="a name from GET /v1/datasets/roots", examples=["ptb"])
    path: str = Field(
        "", max_length=1000, pattern=r"^[^\x00]*$", description="a folder inside the root; empty for the root itself"
    )
    name: str | None = Field(None, max_length=200)
    tokenizer: TokenizerKind | None = Field(None, description=TOKENIZER_DESCRIPTION)
    lowercase: bool | None = Field(None, description="lower-case the text first (default: only for ptb)")
    min_count: int | None = Field(None, ge=1, le=1_000_000, description="word-level: rarer training words are <unk>")
    tokenizer_vocab_size: int | None = Field(
        None, ge=300, description="bpe and unigram: the most pieces the model may have (default 16,000)"
    )
    convention: Literal["ptb", "wikitext", "plain"] | None = Field(
        None, description="deprecated, the earlier name of tokenizer (plain is whitespace)"
    )


class CorpusRoots(BaseModel):
    roots: list[str]


# --- jobs ---


Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG, pattern=TAG_PATTERN)]
NAME_FIELD = Field(None, max_length=MAX_NAME, description="what to call the run (at most 200 characters)")
TAGS_DESCRIPTION = "labels to find the run by: 1-50 characters of letters, digits and _ . : - each, duplicates dropped"
NOTES_FIELD = Field(None, max_length=MAX_NOTES, description="free-form notes (at most 10,000 characters)")


class RunMetadataPatch(RequestModel):
    """A JSON merge of a run's name, tags and notes: only the fields sent change; null clears one."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = NAME_FIELD
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS, description=TAGS_DESCRIPTION)
    notes: str | None = NOTES_FIELD

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class JobCreate(RequestModel):
    """A training job: a dataset, a preset and field overrides of its config."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        description="a dataset id, or the name of exactly one dataset this key can see",
        examples=["ds_0123456789abcdef"],
    )
    preset: str = Field("small", max_length=20, description="small, medium, large or test", examples=["small"])
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="config fields to change, e.g. max_max_epoch, hidden_size, seed, max_steps_per_epoch",
        examples=[{"max_max_epoch": 1, "max_steps_per_epoch": 200}],
    )
    name: str | None = NAME_FIELD
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description=TAGS_DESCRIPTION)
    notes: str | None = NOTES_FIELD

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "tags": self.tags, "notes": self.notes}


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
    eta_seconds: float | None = Field(
        None,
        description="seconds until the job is done, from the speed of this attempt's epoch (steps left in this "
        "and the remaining epochs, the validation passes and the test run); null unless running",
    )


class JobVocabulary(BaseModel):
    """The vocabulary a job trains with, and how much of each split it does not know."""

    model_config = ConfigDict(extra="ignore")

    size: int = Field(description="words of the model's vocabulary, <eos> and <unk> included")
    cap: int | None = Field(description="the config's vocab_size; null: every training word")
    train_unk: int = Field(description="training tokens that are <unk> (folded by the cap, or <unk> in the text)")
    train_unk_rate: float
    valid_unk: int = Field(description="validation tokens that are <unk>: unknown words, or <unk> in the text")
    valid_unk_rate: float = Field(description="valid_unk / validation tokens (one <eos> per line included)")
    test_unk: int
    test_unk_rate: float


class SplitEvaluation(BaseModel):
    """A job's evaluation of one split in per-token, per-word and per-byte terms."""

    perplexity: float = Field(description="per token, as trained: comparable only between jobs with one tokenizer")
    num_tokens: int
    num_words: int = Field(description="whitespace-separated words of the split's raw text")
    num_bytes: int = Field(description="UTF-8 bytes of the split's raw text")
    word_perplexity: float | None = Field(
        description="exp(mean log-loss per token x num_tokens / num_words): comparable across tokenizers"
    )
    bits_per_byte: float | None = Field(description="mean log2-loss per token x num_tokens / num_bytes")

    @classmethod
    def of(cls, ppl: float | None, stats: dict[str, Any] | None) -> SplitEvaluation | None:
        if ppl is None or not stats or not math.isfinite(ppl) or ppl <= 0:
            return None
        tokens, words, size = int(stats["tokens"]), int(stats["words"]), int(stats["bytes"])
        total_ln = math.log(ppl) * tokens
        return cls(
            perplexity=ppl,
            num_tokens=tokens,
            num_words=words,
            num_bytes=size,
            word_perplexity=_exp_or_inf(total_ln / words) if words else None,
            bits_per_byte=total_ln / math.log(2.0) / size if size else None,
        )


def _exp_or_inf(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


class JobEvaluation(BaseModel):
    tokenizer: str = Field(description="the dataset's tokenizer: per-token perplexities compare only within one")
    valid: SplitEvaluation | None = Field(description="the best validation perplexity so far")
    test: SplitEvaluation | None = Field(description="the test perplexity, once trained")


class PaperComparison(BaseModel):
    """The paper's number for the job's preset, and whether the job's may be set beside it."""

    test_ppl: float | None = Field(
        description="Zaremba et al. (2014), Table 1: the preset's test perplexity on PTB; null for the test preset"
    )
    comparable: bool = Field(description="true only for an unmodified small, medium or large preset on PTB")
    reason: str | None = Field(description="why it is not comparable, in words; null when it is")


class JobOut(BaseModel):
    id: str
    name: str | None = Field(None, description="what its owner calls it")
    tags: list[str] = Field(default_factory=list, description="its tags, in the order given")
    notes: str | None = None
    status: str = Field(description="queued, running, canceling, succeeded, failed or canceled")
    message: str = Field(description="why the job is where it is")
    warning: str | None = Field(
        None,
        description="while queued, when no worker that sent a heartbeat lately can run it: what is missing "
        "(the requirements no such worker offers, or any worker at all) and that it waits for such a worker",
    )
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
    vocabulary: JobVocabulary | None = Field(
        None, description="the vocabulary in use and the <unk> rates of the splits, once a worker has read the corpus"
    )
    evaluation: JobEvaluation | None = Field(
        None,
        description="best validation and test perplexity per token, per word and per byte (the split's mean "
        "log-loss per token spread over its words or bytes): what compares jobs whose tokenizers differ",
    )
    error: str | None = Field(description="why the job failed (or why its last attempt ended)")
    requirements: list[str] = Field(
        default_factory=list, description="what a worker must have to run it (cpu, cuda, bf16, tf32)"
    )
    estimate: dict[str, int | float | str] | None = Field(
        None,
        description="at submission: steps_per_epoch, step_seconds, epoch_seconds, test_seconds and total_seconds "
        "on the device of the fastest live worker that can run it (device)",
    )
    paper: PaperComparison | None = Field(
        None, description="the published test perplexity of its preset and whether this job is comparable to it"
    )
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(
        cls,
        job: Job,
        queue_position: int | None,
        message: str,
        dataset: Dataset | None = None,
        warning: str | None = None,
    ) -> JobOut:
        evaluation = None
        if dataset is not None:
            splits = dataset.split_stats or {}
            evaluation = JobEvaluation(
                tokenizer=dataset.tokenizer,
                valid=SplitEvaluation.of(job.best_valid_ppl, splits.get("valid")),
                test=SplitEvaluation.of(job.test_ppl, splits.get("test")),
            )
        progress = None
        if job.progress:
            progress = Progress.model_validate({**job.progress, "eta_seconds": eta_seconds(job)})
        return cls(
            evaluation=evaluation,
            id=job.id,
            name=job.name,
            tags=list(job.tags or []),
            notes=job.notes,
            paper=PaperComparison.model_validate(paper_comparison(job, dataset)),
            status=job.status,
            message=message,
            warning=warning,
            dataset_id=job.dataset_id,
            preset=job.preset,
            overrides=job.overrides,
            config=job.config,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            queue_position=queue_position,
            progress=progress,
            latest_train_ppl=job.latest_train_ppl,
            latest_valid_ppl=job.latest_valid_ppl,
            best_valid_ppl=job.best_valid_ppl,
            test_ppl=job.test_ppl,
            vocabulary=JobVocabulary.model_validate(job.vocabulary) if job.vocabulary else None,
            error=job.error,
            requirements=list(job.requirements or []),
            estimate=job.estimate,
            worker_id=job.worker_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
        )


class JobPage(Page[JobOut]):
    pass


class JobEstimateOut(BaseModel):
    """What a job would be and cost, before it is submitted (nothing is stored)."""

    dataset_id: str
    preset: str
    config: dict[str, Any] = Field(description="the full model config it would train with")
    parameters: int
    vocab_size: int = Field(description="the vocabulary it would train with")
    train_memory_bytes: int = Field(description="an upper estimate of training memory")
    steps_per_epoch: int
    step_seconds: float
    epoch_seconds: float = Field(description="an epoch's training steps and its validation pass")
    test_seconds: float = Field(description="the test run at the end")
    load_seconds: float = Field(description="reading the corpus before the first step")
    total_seconds: float = Field(
        description="the whole run: load_seconds + config.max_max_epoch * epoch_seconds + test_seconds"
    )
    device: str = Field(description="cpu or cuda: the device the estimate is for")
    basis: str = Field(description="whose device: the live workers' (the fastest that can run it), or this server's")
    fits: bool = Field(description="whether the job would be accepted: total_seconds within the job limit")
    limit_seconds: float = Field(description="the job wall-time limit (LSTMLM_MAX_JOB_SECONDS)")
    problem: str | None = Field(description="why it would be refused; null when it fits")


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


# --- logs ---


class LogLineOut(BaseModel):
    """One line of a job's log."""

    id: int = Field(description="increasing within a job; the SSE event id when following")
    time: datetime
    level: str = Field(description="INFO, WARNING or ERROR")
    attempt: int
    worker_id: str | None
    message: str


class LogPage(Page[LogLineOut]):
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null when no more lines yet")


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
