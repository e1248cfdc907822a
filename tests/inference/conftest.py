"""Fixtures for the inference API tests: a real (tiny) training run, its checkpoints recorded in a
migrated database (the harness' SQLite file, or PostgreSQL with TEST_DATABASE=postgres) exactly as
a worker records them, and the real app behind a TestClient and, for the `openai` client, behind
uvicorn on a free port.

The training run and the service are shared by the whole package (training takes a few seconds);
tests that need special rows (a running job, a missing or corrupt file) add their own job with
`InferenceService.add_job`, and alias tests use their own names.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.main import create_app
from app.settings import Settings
from app.store import migrate
from app.store.db import make_engine
from app.store.storage import open_storage
from app.store.tables import Checkpoint, Dataset, Job, new_id
from app.training.checkpoints import checkpoint_key
from model.checkpoint import load, load_model, save, trainer_payload
from model.config import ModelConfig, preset
from model.data import Corpus, Vocabulary
from model.network import LSTMLanguageModel
from model.train import Callbacks, EpochResult, Trainer

torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared 2-core machine

WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "big", "red", "N")
PATTERNS = ("the cat sat on the mat", "a big dog ran fast", "the red cat ran")
LIMITS: dict[str, Any] = {
    "max_sentences": 60,
    "max_sentence_tokens": 100,
    "max_request_tokens": 2000,
    "max_generate_tokens": 50,
    "max_generate_n": 4,
    "model_cache_size": 2,
    "max_concurrent_inference": 16,  # the concurrency tests run up to twelve requests at once
    "max_prompt_words": 2000,
}


def corpus_lines(count: int, seed: int) -> list[str]:
    """Half fixed patterns (so generation has something to learn), half random 3-8 word lines."""
    rng = random.Random(seed)
    return [
        rng.choice(PATTERNS) if i % 2 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        for i in range(count)
    ]


@dataclass(frozen=True)
class TrainedRun:
    """A finished tiny training run: one checkpoint file per epoch and the validation perplexities."""

    corpus_dir: Path
    files: list[Path]  # epochs 1, 2 and 3
    valid_ppl: list[float]
    config: ModelConfig


class SaveEveryEpoch(Callbacks):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: list[Path] = []
        self.valid: list[float] = []

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        self.files.append(save(trainer_payload(trainer), self.folder / f"epoch-{result.epoch}.pt"))
        self.valid.append(result.valid_ppl)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Train the test preset widened (H = 32, 2 layers) for three epochs on a tiny corpus, saving each epoch.

    About two seconds; enough for greedy decoding to reproduce the corpus' patterns and end sentences.
    """
    root = tmp_path_factory.mktemp("trained")
    corpus_dir = root / "corpus"
    corpus_dir.mkdir()
    for split, count, seed in (("train", 700, 1), ("valid", 80, 2), ("test", 40, 3)):
        (corpus_dir / f"{split}.txt").write_text("".join(f"{line}\n" for line in corpus_lines(count, seed)))
    config = preset(
        "test",
        hidden_size=32,
        num_layers=2,
        num_steps=5,
        batch_size=4,
        max_epoch=3,
        max_max_epoch=3,
        device="cpu",
        max_steps_per_epoch=None,  # whole epochs and splits: the test preset's caps lifted
        max_eval_tokens=None,
    )
    callbacks = SaveEveryEpoch(root / "run")
    Trainer(config, Corpus.load(corpus_dir)).fit(callbacks)
    return TrainedRun(corpus_dir, callbacks.files, callbacks.valid, config)


@dataclass
class ModelFiles:
    """A checkpoint file loaded back for direct computations in the tests."""

    model: LSTMLanguageModel
    vocab: Vocabulary


def load_direct(path: Path) -> ModelFiles:
    model, vocab, _ = load_model(load(path), "cpu")
    return ModelFiles(model, vocab)


class InferenceService:
    """The app on a migrated database holding the trained run as a succeeded job."""

    def __init__(self, settings: Settings, engine: Engine, client: TestClient, run: TrainedRun) -> None:
        self.settings, self.engine, self.client, self.run = settings, engine, client, run
        self.storage = open_storage(settings)
        with Session(engine) as session:
            self.dataset_id = new_id("ds")
            session.add(
                Dataset(
                    id=self.dataset_id,
                    name="tiny",
                    source="builtin",
                    path=str(run.corpus_dir),
                    train_tokens=1,
                    valid_tokens=1,
                    test_tokens=1,
                    vocab_size=1,
                    size_bytes=1,
                )
            )
            session.commit()
        epochs = zip(run.files, range(1, len(run.files) + 1), run.valid_ppl, strict=True)
        self.job_id, self.checkpoint_ids = self.add_job("succeeded", list(epochs))
        # The best epoch: what the job id serves.
        best = min(range(len(run.files)), key=lambda i: run.valid_ppl[i])
        self.best_checkpoint_id = self.checkpoint_ids[best]
        self.best_file = run.files[best]

    def add_job(
        self, status: str, checkpoints: Sequence[tuple[Path | bytes, int, float | None]]
    ) -> tuple[str, list[str]]:
        """A job with these checkpoints (source file or raw bytes, epoch, valid ppl), oldest first.

        Files are stored where a worker stores them: `checkpoints/<job id>/<checkpoint id>.pt`.
        """
        job_id = new_id("job")
        now = datetime.now(UTC)
        ids: list[str] = []
        with Session(self.engine) as session:
            session.add(
                Job(
                    id=job_id,
                    status=status,
                    preset="test",
                    overrides={},
                    config=self.run.config.to_dict(),
                    dataset_id=self.dataset_id,
                    attempt=1,
                    max_attempts=3,
                    progress={},
                    best_valid_ppl=min((v for _, _, v in checkpoints if v is not None), default=None),
                    created_at=now,
                    updated_at=now,
                )
            )
            session.flush()
            for n, (source, epoch, valid_ppl) in enumerate(checkpoints):
                checkpoint_id = new_id("ckpt")
                key = checkpoint_key(job_id, checkpoint_id)
                size = self.write_checkpoint(key, source.read_bytes() if isinstance(source, Path) else source)
                session.add(
                    Checkpoint(
                        id=checkpoint_id,
                        job_id=job_id,
                        epoch=epoch,
                        step=epoch * 100,
                        kind="epoch" if valid_ppl is not None else "interrupt",
                        valid_ppl=valid_ppl,
                        path=key,
                        size_bytes=size,
                        attempt=1,
                        created_at=now + timedelta(seconds=n),
                    )
                )
                ids.append(checkpoint_id)
            session.commit()
        return job_id, ids

    def write_checkpoint(self, key: str, content: bytes | None) -> int:
        """Store `content` under a checkpoint's key (None: remove it); returns its size. What was
        there goes first: the service writes a key once, so a read never expects new bytes under it."""
        self.storage.delete(key)
        if content is None:
            return 0
        with self.storage.writing(key) as path:
            path.write_bytes(content)
        return len(content)


@pytest.fixture(scope="session")
def inference_service(tmp_path_factory: pytest.TempPathFactory, trained_run: TrainedRun) -> Iterator[InferenceService]:
    """The real app on a migrated database (the harness' backend), with the trained run recorded as a succeeded job."""
    root = tmp_path_factory.mktemp("service")
    with harness.fresh_database(root) as url:
        # stored files: the local data folder, or with TEST_STORAGE=s3 the harness' S3 server
        storage = harness.s3_settings_overrides(root) if harness.storage_backend() == "s3" else {}
        settings = Settings(_env_file=None, data_dir=root / "data", database_url=url, auth=False, **storage, **LIMITS)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(url)
        engine = make_engine(url)
        with TestClient(create_app(settings)) as client:
            yield InferenceService(settings, engine, client, trained_run)
        engine.dispose()


@pytest.fixture(scope="session")
def direct(trained_run: TrainedRun, inference_service: InferenceService) -> ModelFiles:
    """The served (best) checkpoint loaded straight from its file, for direct computations."""
    return load_direct(inference_service.best_file)


@pytest.fixture
def client(inference_service: InferenceService) -> TestClient:
    return inference_service.client


@pytest.fixture(scope="session")
def server_url(inference_service: InferenceService) -> Iterator[str]:
    """The same database served by uvicorn on a free port (for the `openai` client and raw HTTP)."""
    with served(inference_service.settings) as url:
        yield url


@contextlib.contextmanager
def served(settings: Settings, app: FastAPI | None = None) -> Iterator[str]:
    """An app with `settings` (or the given one) served by uvicorn on a free port, in a thread; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app or create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- direct computations the API numbers are compared with ---


def hand_logprobs(files: ModelFiles, words: Sequence[str]) -> list[float]:
    """Natural log p of each word, one token at a time from a zero state after <eos> (the oracle)."""
    return harness.hand_logprobs(files.model, files.vocab, words)


def hand_greedy(files: ModelFiles, prompt: Sequence[str], steps: int) -> list[str]:
    """Argmax chain after the prompt (context <eos> + prompt), `steps` words, <eos> included."""
    model, vocab = files.model, files.vocab
    ids = [vocab.eos_id] + [vocab.id_of(w) for w in prompt]
    chosen: list[str] = []
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]), model.zero_state(1))
        for _ in range(steps):
            best = int(logits[0, -1].argmax())
            chosen.append(vocab.words[best])
            logits, state = model(torch.tensor([[best]]), state)
    return chosen


def problem(response: Any, status: int) -> dict[str, Any]:
    """Assert a problem+json answer with this status and the RFC 9457 fields; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"] == "about:blank"
    return body


def close(a: Sequence[float | None], b: Sequence[float | None], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and math.isclose(x, y, abs_tol=tol))
        for x, y in zip(a, b, strict=True)
    )
