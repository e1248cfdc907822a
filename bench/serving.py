"""What the inference benches share: the small preset's model over the PTB vocabulary (a trained
checkpoint or random weights), a service data folder that serves it, uvicorn in a subprocess, the
matmul peak and the forward FLOPs per token.

Not a benchmark itself; the benchmarks in `bench/` use it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import torch
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere without installing the package

from app.store import migrate  # noqa: E402
from app.store.db import make_engine  # noqa: E402
from app.store.tables import Checkpoint, Dataset, Job  # noqa: E402
from model.checkpoint import load, load_model, save, trainer_payload  # noqa: E402
from model.config import ModelConfig, preset  # noqa: E402
from model.data import Corpus, Vocabulary  # noqa: E402
from model.network import LSTMLanguageModel  # noqa: E402
from model.train import Trainer  # noqa: E402

PTB_DIR = REPO.parent / "shared" / "data" / "ptb"
JOB_ID, CHECKPOINT_ID = "job_bench", "ckpt_bench"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device: torch.device | None = None) -> float:
    """Best-of-`repeats` fp32 GFLOP/s of an n x n x n `torch.mm` with the current thread count
    (several products per timing on a GPU, where one is far below the timer's resolution)."""
    device = device or torch.device("cpu")
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    inner = 50 if device.type == "cuda" else 1
    torch.mm(a, b, out=out)  # warm-up: thread pool, kernel selection
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best / 1e9


def checkpoint_file(checkpoint: Path | None, data: Path, folder: Path) -> Path:
    """The checkpoint to serve: the given one, or the small preset with random weights (seed 0)."""
    if checkpoint is not None:
        return checkpoint
    trainer = Trainer(preset("small", device="cpu"), Corpus.load(data, 10000))
    return save(trainer_payload(trainer), folder / "small-random.pt")


def load_served(path: Path) -> tuple[LSTMLanguageModel, Vocabulary, ModelConfig]:
    """The model of a checkpoint on the CPU, as the service loads it."""
    model, vocab, config = load_model(load(path), "cpu")
    model.requires_grad_(False)
    return model, vocab, config


def prepare_service(data_dir: Path, checkpoint: Path) -> str:
    """A migrated SQLite database under `data_dir` with `checkpoint` recorded as a finished job's."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{(data_dir / 'service.db').resolve()}"
    migrate.upgrade(url)
    target = data_dir / "checkpoints" / JOB_ID / f"{CHECKPOINT_ID}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, target)
    now = datetime.now(UTC)
    engine = make_engine(url)
    with Session(engine) as session:
        session.add(
            Dataset(
                id="ds_bench",
                name="ptb",
                source="builtin",
                path=str(PTB_DIR),
                train_tokens=0,
                valid_tokens=0,
                test_tokens=0,
                vocab_size=10000,
                size_bytes=0,
                created_at=now,
            )
        )
        session.flush()
        session.add(
            Job(
                id=JOB_ID,
                status="succeeded",
                preset="small",
                overrides={},
                config=preset("small").to_dict(),
                dataset_id="ds_bench",
                attempt=1,
                max_attempts=1,
                progress={},
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        session.add(
            Checkpoint(
                id=CHECKPOINT_ID,
                job_id=JOB_ID,
                epoch=0,
                step=0,
                kind="final",
                valid_ppl=None,
                path=str(target),
                size_bytes=target.stat().st_size,
                attempt=1,
                created_at=now,
            )
        )
        session.commit()
    engine.dispose()
    return url


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Return once GET `url` answers 200; `RuntimeError` if `proc` exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start ({url} never answered)")
        time.sleep(0.2)


@contextmanager
def serve(data_dir: Path, threads: int = 0, **settings: object) -> Iterator[str]:
    """`uvicorn app.main:create_app` in a subprocess on a free port, with these settings; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env["LSTMLM_DATA_DIR"] = str(data_dir)
    env["LSTMLM_AUTH"] = "off"  # a loopback-only benchmark server
    env.update({f"LSTMLM_{k.upper()}": str(v) for k, v in settings.items()})
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    proc = subprocess.Popen([*command, "--log-level", "warning"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/v1/models", proc, 60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
