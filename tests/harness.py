"""The harness the service tests share: settings that point at a SQLite file in a temporary
folder, the database migrated with Alembic, tiny corpora, the real app behind a TestClient and
real `python -m worker` processes.

The database is a SQLite file under the test's folder, or, with `TEST_DATABASE=postgres`, a fresh
schema on the PostgreSQL server at `$TEST_POSTGRES_URL` (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), created for one test and dropped after it;
worker processes get the same URL.

Stored files (datasets, checkpoints, scoring inputs and results) go to the local data folder, or,
with `TEST_STORAGE=s3`, to a prefix of its own per test in one bucket of the test process' SeaweedFS
S3 server (`tests/s3server.py`), with the local cache under the test's folder; a test can ask for S3
whatever `TEST_STORAGE` says with `make_settings(root, **s3_settings_overrides(root))`.

Jobs use the test preset widened a little (H = 16, T = 5, B = 4) on corpora of a few thousand
tokens, so an epoch takes about a second; workers train on one thread and use short leases.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool

from app.main import create_app
from app.settings import Settings
from app.store import migrate
from app.store.db import make_engine
from app.training.queue import claim_next
from model.data import Vocabulary
from model.network import LSTMLanguageModel

REPO = Path(__file__).resolve().parent.parent
WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "big", "red", "N")
# Whole epochs and whole splits (the test preset's caps lifted): the tiny corpora are short already.
TINY: dict[str, Any] = {
    "hidden_size": 16,
    "num_steps": 5,
    "batch_size": 4,
    "max_max_epoch": 2,
    "device": "cpu",
    "max_steps_per_epoch": None,
    "max_eval_tokens": None,
}
TERMINAL = ("succeeded", "failed", "canceled")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def database_backend() -> str:
    """`sqlite` (the default) or `postgres`: where the harness puts each test's database."""
    backend = os.environ.get("TEST_DATABASE", "sqlite")
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"TEST_DATABASE must be sqlite or postgres, got {backend!r}")
    return backend


@contextmanager
def postgres_schema(server_url: str = POSTGRES_URL) -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema on `server_url`; the schema is dropped afterwards."""
    admin = make_engine(server_url, connect_args={"connect_timeout": 3}, poolclass=NullPool)
    schema = f"t_{secrets.token_hex(6)}"
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in server_url else "?"
    try:
        yield f"{server_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def fresh_database(root: Path) -> Iterator[str]:
    """The URL of an empty database for one test: SQLite under `root`, or a PostgreSQL schema."""
    if database_backend() == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        (root / "data").mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{(root / 'data' / 'service.db').resolve()}"


def storage_backend() -> str:
    """`local` (the default) or `s3`: where the harness puts each test's stored files."""
    backend = os.environ.get("TEST_STORAGE", "local")
    if backend not in ("local", "s3"):
        raise ValueError(f"TEST_STORAGE must be local or s3, got {backend!r}")
    return backend


def s3_settings_overrides(root: Path) -> dict[str, Any]:
    """Settings that put one test's stored files on the test S3 server: a fresh prefix in the test
    process' bucket, the cache under `root`. The server's AWS_* variables go into `os.environ`, so
    the app under test (and the worker processes it starts) reach it."""
    import s3server  # boto3 and the server only where S3 is used

    os.environ.update(s3server.env())
    prefix = f"{root.name}-{secrets.token_hex(4)}"
    return {"storage_url": f"s3://{s3server.shared_bucket()}/{prefix}", "cache_dir": root / "cache"}


def corpus_lines(count: int, seed: int) -> list[str]:
    """Deterministic lines of 3-8 words drawn from a tiny vocabulary."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(count)]


def write_corpus(folder: Path, train: int = 600, valid: int = 80, test: int = 40, seed: int = 1) -> Path:
    """A corpus folder with train.txt, valid.txt and test.txt of that many lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for offset, (split, count) in enumerate((("train", train), ("valid", valid), ("test", test))):
        text = "".join(f"{line}\n" for line in corpus_lines(count, seed * 10 + offset))
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    return folder


LICENSES = Path("/usr/share/common-licenses")  # Debian's base-files: real English, always there


def raw_english_lines() -> list[str]:
    """The non-blank lines of the license texts Debian ships (about 5,000 lines, 48,000 words): raw
    English with case, punctuation, numbers and quotes, never seen by the PTB models."""
    if not LICENSES.is_dir():
        import pytest

        pytest.skip(f"no license texts at {LICENSES} (Debian's base-files)")
    lines: list[str] = []
    for path in sorted(p for p in LICENSES.iterdir() if p.is_file() and not p.is_symlink()):
        lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def write_raw_corpus(folder: Path) -> Path:
    """A raw-English corpus folder of the license texts: every 20th line valid, the next test, the rest train."""
    lines = raw_english_lines()
    splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, line in enumerate(lines):
        splits["valid" if i % 20 == 0 else "test" if i % 20 == 1 else "train"].append(line)
    folder.mkdir(parents=True, exist_ok=True)
    for split, chosen in splits.items():
        (folder / f"{split}.txt").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return folder


def make_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for one test service: everything under `root`, short leases, no .env file."""
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "lease_seconds": 4.0,
        "heartbeat_seconds": 0.5,
        "poll_seconds": 0.2,
        "events_poll_seconds": 0.1,
        "torch_threads": 1,
        "corpus_roots": {},
        "auth": False,  # tests about authentication turn it on: open_service(tmp, auth=True)
    }
    if storage_backend() == "s3" and "storage_url" not in overrides:
        values.update(s3_settings_overrides(root))
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a worker process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env.update(
        {
            "LSTMLM_DATA_DIR": str(settings.data_dir),
            "LSTMLM_DATABASE_URL": settings.resolved_database_url,
            "LSTMLM_LEASE_SECONDS": str(settings.lease_seconds),
            "LSTMLM_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
            "LSTMLM_POLL_SECONDS": str(settings.poll_seconds),
            "LSTMLM_MAX_ATTEMPTS": str(settings.max_attempts),
            "LSTMLM_KEEP_LAST_CHECKPOINTS": str(settings.keep_last_checkpoints),
            "LSTMLM_TORCH_THREADS": str(settings.torch_threads or 1),
            "LSTMLM_MAX_JOB_SECONDS": str(settings.max_job_seconds),
            "LSTMLM_RETRY_BACKOFF_SECONDS": str(settings.retry_backoff_seconds),
            "LSTMLM_SCORING_CHUNK_LINES": str(settings.scoring_chunk_lines),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.worker_max_world_size is not None:
        env["LSTMLM_WORKER_MAX_WORLD_SIZE"] = str(settings.worker_max_world_size)
    if settings.storage_url is not None:
        env["LSTMLM_STORAGE_URL"] = settings.storage_url
    if settings.cache_dir is not None:
        env["LSTMLM_CACHE_DIR"] = str(settings.cache_dir)
    env["LSTMLM_CACHE_BYTES"] = str(settings.cache_bytes)
    env["LSTMLM_STORAGE_RETRY_SECONDS"] = str(settings.storage_retry_seconds)
    if (settings.storage_url or "").startswith("s3://"):
        import s3server

        env.update(s3server.env())
    return env


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy and return its value; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class WorkerProcess:
    """A `python -m worker` subprocess with its log file."""

    def __init__(self, settings: Settings, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            cwd=REPO,
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; fail with its log when it does not."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker {self.pid} did not exit in {timeout} s; log:\n{self.log()}") from None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> None:
        """Kill the process if it still runs (test cleanup)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._log.close()


class Service:
    """The app behind a TestClient, its settings and engine, and helpers the tests share."""

    def __init__(self, client: TestClient, settings: Settings, engine: Engine, tmp: Path) -> None:
        self.client, self.settings, self.engine, self.tmp = client, settings, engine, tmp
        self.workers: list[WorkerProcess] = []

    def upload(self, folder: Path, name: str | None = None, **fields: Any) -> dict[str, Any]:
        """Upload a corpus folder; `fields` are the upload's form fields (tokenizer, min_count, ...)."""
        files = {
            split: (f"{split}.txt", (folder / f"{split}.txt").read_bytes(), "text/plain")
            for split in ("train", "valid", "test")
        }
        data = {
            **({"name": name} if name else {}),
            **{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()},
        }
        response = self.client.post("/v1/datasets", files=files, data=data or None)
        assert response.status_code == 201, response.text
        return response.json()

    def submit(
        self, dataset_id: str, preset: str = "test", headers: dict[str, str] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        body = {"dataset_id": dataset_id, "preset": preset, "overrides": {**TINY, **overrides}}
        response = self.client.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, job_id: str, statuses: tuple[str, ...], timeout: float = 60.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        try:
            return wait_for(reached, timeout, what=f"job {job_id} to be {' or '.join(statuses)}")
        except AssertionError as exc:
            logs = "\n".join(f"--- worker {w.pid}\n{w.log()}" for w in self.workers)
            raise AssertionError(f"{exc}; job: {self.job(job_id)}\n{logs}") from None

    def metrics(self, job_id: str, *keys: str, **params: Any) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/jobs/{job_id}/metrics", params={"key": list(keys), "limit": 10_000, **params})
        assert response.status_code == 200, response.text
        return response.json()["metrics"]

    def start_worker(self, *args: str, settings: Settings | None = None) -> WorkerProcess:
        log_path = self.tmp / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(settings or self.settings, list(args), log_path)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


def open_service(tmp: Path, **settings_overrides: Any) -> tuple[Service, Callable[[], None]]:
    """Migrate a fresh database for `tmp` and serve the app on it; returns (service, close)."""
    stack = ExitStack()
    if "database_url" not in settings_overrides:
        settings_overrides["database_url"] = stack.enter_context(fresh_database(tmp))
    settings = make_settings(tmp, **settings_overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    client = TestClient(create_app(settings))
    client.__enter__()
    service = Service(client, settings, engine, tmp)

    def close() -> None:
        service.close()
        client.__exit__(None, None, None)
        engine.dispose()
        stack.close()

    return service, close


def race_claims(engine: Engine, claimers: int) -> list[str]:
    """`claimers` threads claim jobs from one queue, all starting at once, until it is empty: every claim won."""
    won: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(claimers)

    def claimer(name: str) -> None:
        start.wait()
        while (claimed := claim_next(engine, name, lease_seconds=60)) is not None:
            with lock:
                won.append(claimed.id)

    threads = [threading.Thread(target=claimer, args=(f"claimer-{i}",)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def stored_state(service: Service) -> dict[str, Any]:
    """Every row of every table and the key of every stored file (local or S3), except the SQLite
    database's own files (which lie in the local data folder, the local storage's root)."""
    from sqlalchemy import select

    from app.store.storage import open_storage
    from app.store.tables import Base

    state: dict[str, Any] = {}
    with service.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            state[table.name] = sorted(map(repr, connection.execute(select(table)).all()))
    entries = open_storage(service.settings).list("")
    state["files"] = [e.key for e in entries if not e.key.rsplit("/", 1)[-1].startswith("service.db")]
    return state


def hand_logprobs(model: LSTMLanguageModel, vocab: Vocabulary, tokens: Sequence[str]) -> list[float]:
    """The scoring oracle: natural log p of each token, feeding the model one token at a time from a
    zero state after <eos>, the softmax in float64."""
    state = model.zero_state(1)
    previous = vocab.eos_id
    out: list[float] = []
    with torch.no_grad():
        for token in tokens:
            logits, state = model(torch.tensor([[previous]]), state)
            target = vocab.id_of(token)
            out.append(torch.log_softmax(logits[0, -1].double(), dim=-1)[target].item())
            previous = target
    return out
