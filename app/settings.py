"""Deployment settings, read from the environment (prefix `LSTMLM_`) or a `.env` file.

Nothing here runs at import time: call `get_settings()` (cached) or build `Settings(...)` directly.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything that differs between deployments; experiment configs never live here."""

    model_config = SettingsConfigDict(env_prefix="LSTMLM_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="root of the embedded defaults: database, corpora, checkpoints")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/service.db")
    storage_url: str | None = Field(
        None,
        description="where datasets, checkpoints and scoring results live: a local folder (default: data_dir) or "
        "s3://bucket/prefix, with the endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY and AWS_REGION",
    )
    cache_dir: Path | None = Field(
        None, description="local copies of stored objects (S3 storage only); default ~/.cache/lstm-lm"
    )
    cache_bytes: int = Field(20 * 1024**3, ge=0, description="bytes the local cache of stored objects keeps at most")
    storage_retry_seconds: float = Field(
        120.0, gt=0, description="how long a storage request keeps retrying while S3 does not answer"
    )
    stale_write_seconds: float = Field(
        3600.0,
        ge=0,
        description="a write to storage unfinished for this long is a crashed process' and is removed at start-up",
    )
    corpus_roots: dict[str, str] = Field(
        default_factory=dict,
        description='server-side corpus folders exposed by name, e.g. {"ptb": "/srv/ptb"} or '
        '{"wiki": "s3://corpora/wiki"} (JSON)',
    )
    # Worker and queue
    lease_seconds: float = Field(30.0, gt=0, description="a running job's lease; expired leases are requeued")
    heartbeat_seconds: float = Field(5.0, gt=0, description="how often a worker renews its lease")
    poll_seconds: float = Field(1.0, gt=0, description="how often an idle worker looks for queued jobs")
    max_attempts: int = Field(3, ge=1, description="attempts before a job whose worker keeps dying fails")
    keep_last_checkpoints: int = Field(2, ge=1, description="per job: keep the best and the last N checkpoints")
    worker_device: str = Field("auto", description="auto, cpu or cuda: where jobs with device auto train")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads per worker; default: torch's own")
    worker_max_world_size: int | None = Field(
        None,
        ge=1,
        le=64,
        description="processes a worker gives one job (world_size); default: the visible GPUs on a CUDA worker, "
        "else the CPU count",
    )
    events_poll_seconds: float = Field(0.5, gt=0, description="how often an event stream looks for new job events")
    worker_restart_seconds: float = Field(
        1.0, gt=0, description="`python -m app run`: wait before restarting a worker that exited or was killed"
    )
    worker_restart_max_seconds: float = Field(
        60.0,
        gt=0,
        description="the restart wait doubles while a worker keeps dying within this long of its start, up to this",
    )
    # Limits
    max_upload_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest corpus upload (all files together)")
    max_model_parameters: int = Field(200_000_000, gt=0, description="largest model a job may ask for")
    max_train_memory_bytes: int = Field(8 * 1024**3, gt=0, description="estimated training memory a job may use")
    # Authentication and per-key limits
    auth: bool = Field(True, description="require API keys (on/off); off only for tests and loopback-only use")
    cors_origins: list[str] = Field(
        default_factory=list, description='origins allowed to call the API from a browser, JSON: ["https://a.example"]'
    )
    max_stored_bytes_per_key: int | None = Field(
        10 * 1024**3, ge=0, description="bytes of uploads, checkpoints and scoring results a non-admin key may keep"
    )
    max_queued_jobs_per_key: int | None = Field(
        20, ge=0, description="queued training jobs and scorings a non-admin key may have at once"
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 365, description="a dashboard login lasts this long after its last use (sliding)"
    )
    # Inference
    model_cache_size: int = Field(4, ge=1, description="loaded models kept in memory (least recently used out)")
    max_sentences: int = Field(1000, ge=1, description="sentences per scoring request")
    max_sentence_tokens: int = Field(1000, ge=1, description="tokens per sentence")
    max_request_tokens: int = Field(100_000, ge=1, description="tokens per scoring request")
    max_generate_tokens: int = Field(1000, ge=1, description="largest max_tokens of a generation request")
    max_generate_n: int = Field(16, ge=1, description="largest n of a generation request")
    # Bounded work per job
    max_job_seconds: float = Field(86_400.0, gt=0, description="wall time a job may take from its first start")
    max_step_seconds: float = Field(
        10.0, gt=0, description="longest estimated training step a job may have (cancel waits for one step)"
    )
    worker_gflops: float = Field(50.0, gt=0, description="sustained GFLOP/s a worker trains at, for estimates")
    cuda_gflops: float = Field(
        5000.0, gt=0, description="sustained GFLOP/s a worker trains at on a CUDA device, for estimates"
    )
    retry_backoff_seconds: float = Field(
        5.0, ge=0, description="wait before retrying a job after a transient error; doubles per attempt"
    )
    # Bounded work per request
    max_prompt_words: int = Field(20_000, ge=1, description="words of one generation or completion prompt")
    max_completion_prompts: int = Field(64, ge=1, description="prompts of one completions request")
    max_json_bytes: int = Field(2 * 1024 * 1024, gt=0, description="largest body of a request other than an upload")
    max_concurrent_inference: int = Field(
        16,
        ge=1,
        description="generation and completions requests decoding at once (they share each step); up to four "
        "times as many wait for a turn, at most max_queue_seconds; past either, 503 with Retry-After",
    )
    score_batch_tokens: int = Field(
        16_384, ge=64, description="tokens one scoring forward pass takes, from every request waiting"
    )
    max_queue_tokens: int = Field(
        262_144, ge=1, description="tokens waiting to be scored at most; past it 503 with Retry-After"
    )
    max_queue_seconds: float = Field(
        30.0, gt=0, description="how long a request waits for its turn before 503 with Retry-After"
    )
    max_event_streams: int = Field(64, ge=1, description="open job event streams; past it 503 with Retry-After")
    upload_parse_process_bytes: int = Field(
        1024 * 1024, ge=0, description="uploads at least this large are parsed in a child process"
    )
    subword_train_sentences: int = Field(
        300_000, ge=1, description="training lines a bpe or unigram model is trained on at most (spread evenly)"
    )
    max_tokenizer_vocab_size: int = Field(
        64_000, ge=300, description="largest tokenizer_vocab_size an upload may ask a subword model for"
    )
    unk_warn_rate: float = Field(
        0.05, ge=0, le=1, description="share of <unk> tokens past which a score carries a warning"
    )
    scoring_chunk_lines: int = Field(1000, ge=1, description="lines a scoring job scores and records at a time")
    inference_precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="precision of scoring, scoring jobs and generation unless a request names one: fp32 or bf16"
    )

    @field_validator("corpus_roots", mode="before")
    @classmethod
    def _roots_as_text(cls, value: object) -> object:
        """Folders may be given as paths; they are kept as text (an `s3://` URL is not a path)."""
        if isinstance(value, dict):
            return {name: str(root) if isinstance(root, os.PathLike) else root for name, root in value.items()}
        return value

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded default: a SQLite file under `data_dir`."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'service.db').resolve()}"

    @property
    def resolved_cache_dir(self) -> Path:
        """Where copies of stored objects are kept: `cache_dir`, or `~/.cache/lstm-lm`."""
        if self.cache_dir is not None:
            return self.cache_dir
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lstm-lm"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def admin_key_file(self) -> Path:
        """Where `python -m app run` keeps the admin key it creates on first start (mode 0600)."""
        return self.data_dir / "admin.key"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"


@lru_cache
def get_settings() -> Settings:
    """The process' settings, read from the environment on first use."""
    return Settings()
