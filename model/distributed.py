"""One run on several processes: the ranks past 0 and the `torch.distributed` group they share.

The calling process is rank 0: it keeps its trainer, its callbacks (progress, checkpoints, should_stop)
and everything else it owns. `Ranks` starts ranks 1..N-1 as fresh interpreters (multiprocessing's
`spawn`: the caller may hold threads, database connections or a CUDA context, which `fork` would
copy half-made) and joins them in one group, `gloo` on the CPU and `nccl` on CUDA (rank r on GPU r).
They meet through a `FileStore` in a fresh temporary folder: no port to pick, so no race with another
program for it, and nothing reachable from outside the machine. Rank 0 watches the helpers while
they start (a few seconds: each imports torch), so one that fails to start fails the run at once.

Each helper rank builds the same trainer from the same config and corpus (or the same checkpoint
file), runs `Trainer.fit` with callbacks that do nothing, and follows rank 0: rank 0's `should_stop`
is broadcast before every step (`model.train`). Helpers ignore SIGINT and SIGTERM (a terminal's
Ctrl-C or a stop sent to the process group reaches rank 0, which stops them all at a step
boundary) and exit by themselves when rank 0's process is gone. When a rank dies, rank 0's next
collective fails and `Ranks` raises `RankFailed` naming it.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import TracebackType

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.config import ModelConfig
from model.data import Corpus
from model.network import resolve_device
from model.train import Callbacks, Diverged, Trainer

DEFAULT_TIMEOUT = timedelta(minutes=10)  # a collective that waits longer fails (a rank hung)
JOIN_SECONDS = 10.0  # how long closing waits for the helpers before killing them


class RankFailed(RuntimeError):
    """A helper rank of a run on several processes died or could not start."""


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def threads_per_rank(world_size: int, total: int | None = None) -> int:
    """CPU threads for each of `world_size` processes sharing `total` (default: torch's count)."""
    return max(1, (total or torch.get_num_threads()) // world_size)


@dataclass(frozen=True)
class PackedCorpus:
    """A corpus with its id streams as one `torch.save` blob: sent to a helper through its pipe, not
    through shared memory (which torch.multiprocessing uses for tensors, and a container may keep
    small)."""

    corpus: Corpus  # with empty id streams
    streams: bytes  # [train, valid, test]

    @classmethod
    def of(cls, corpus: Corpus) -> PackedCorpus:
        buffer = io.BytesIO()
        torch.save([corpus.train.clone(), corpus.valid.clone(), corpus.test.clone()], buffer)
        empty = torch.zeros(0, dtype=torch.long)
        return cls(replace(corpus, train=empty, valid=empty, test=empty), buffer.getvalue())

    def unpack(self) -> Corpus:
        train, valid, test = torch.load(io.BytesIO(self.streams), weights_only=True)
        return replace(self.corpus, train=train, valid=valid, test=test)


@dataclass(frozen=True)
class RankSpec:
    """What a helper rank needs to build its trainer: the run's config (device resolved by the
    caller), its corpus, the checkpoint it resumes from, if any, and the group to join."""

    config: ModelConfig
    corpus: PackedCorpus
    resume_path: str | None
    store_path: str  # the FileStore the ranks meet in
    threads: int
    timeout_seconds: float


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _helper(index: int, spec: RankSpec, parent_pid: int) -> None:
    """The body of rank `index + 1` (`torch.multiprocessing.start_processes` numbers from 0)."""
    from model import checkpoint  # imports the trainer too; kept out of the module's import time

    rank = index + 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _watch_parent(parent_pid)
    torch.set_num_threads(spec.threads)
    device = resolve_device(spec.config.device)
    if device.type == "cuda":
        torch.cuda.set_device(rank)
    store = dist.FileStore(spec.store_path, spec.config.world_size)
    store.set(f"ready/{rank}", "1")  # rank 0 waits for these while it watches the processes
    dist.init_process_group(
        backend_for(device),
        store=store,
        rank=rank,
        world_size=spec.config.world_size,
        timeout=timedelta(seconds=spec.timeout_seconds),
    )
    try:
        corpus = spec.corpus.unpack()
        if spec.resume_path is not None:
            payload = checkpoint.load(spec.resume_path)
            trainer = checkpoint.resume_trainer(
                payload, corpus, spec.config.device, rank=rank, world_size=spec.config.world_size
            )
        else:
            trainer = Trainer(spec.config, corpus, rank=rank)
        trainer.fit(Callbacks())
    except Diverged:
        pass  # every rank sees the same summed loss: rank 0 raises and reports it
    finally:
        dist.destroy_process_group()
    # Done: nothing is left to write, and tearing torch's interpreter down takes seconds.
    os._exit(0)


class Ranks:
    """`with Ranks(config, corpus):` rank 0 (this process) in a group with ranks 1..N-1, started
    for the block and gone after it. `config` is rank 0's trainer's (its `device` resolves the same
    way in every process of this machine; on CUDA rank r uses GPU r)."""

    def __init__(
        self,
        config: ModelConfig,
        corpus: Corpus,
        resume_path: str | Path | None = None,
        threads: int | None = None,
        timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        if config.world_size < 2:
            raise ValueError("Ranks is for world_size 2 or more")
        self.config, self.corpus = config, corpus
        self.resume_path = None if resume_path is None else str(resume_path)
        self.threads = threads or threads_per_rank(config.world_size)
        self.timeout = timeout
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and torch.cuda.device_count() < config.world_size:
            raise RankFailed(
                f"world_size {config.world_size} needs as many GPUs; {torch.cuda.device_count()} are visible"
            )
        self.folder: str | None = None
        self.context: mp.ProcessContext | None = None
        self.saved_threads = torch.get_num_threads()

    def __enter__(self) -> Ranks:
        self.folder = tempfile.mkdtemp(prefix="lstmlm-ranks-")
        store_path = str(Path(self.folder, "store"))
        spec = RankSpec(
            self.config,
            PackedCorpus.of(self.corpus),
            self.resume_path,
            store_path,
            self.threads,
            self.timeout.total_seconds(),
        )
        try:
            self.context = mp.start_processes(
                _helper,
                args=(spec, os.getpid()),
                nprocs=self.config.world_size - 1,
                join=False,
                daemon=True,
                start_method="spawn",
            )
            torch.set_num_threads(self.threads)
            if self.device.type == "cuda":
                torch.cuda.set_device(0)
            store = dist.FileStore(store_path, self.config.world_size)
            self._wait_for_helpers(store)
            dist.init_process_group(
                backend_for(self.device),
                store=store,
                rank=0,
                world_size=self.config.world_size,
                timeout=self.timeout,
            )
        except BaseException as exc:
            failed = None if isinstance(exc, RankFailed) else self.dead()
            self._close(wait=False)
            if failed:
                raise RankFailed(f"{failed} before the run began") from exc
            raise
        return self

    def _wait_for_helpers(self, store: dist.Store) -> None:
        """Until every helper has started (imported torch, loaded its checkpoint...): `RankFailed` as
        soon as one dies, rather than at the end of the rendezvous' timeout."""
        keys = [f"ready/{rank}" for rank in range(1, self.config.world_size)]
        deadline = time.monotonic() + self.timeout.total_seconds()
        while not store.check(keys):
            assert self.context is not None
            for index, process in enumerate(self.context.processes):
                if not process.is_alive():
                    raise RankFailed(f"rank {index + 1} exited with code {process.exitcode} while starting")
            if time.monotonic() > deadline:
                raise RankFailed(f"the ranks did not start within {self.timeout.total_seconds():g} s")
            time.sleep(0.05)

    def dead(self) -> str | None:
        """Which helper ranks died with an error (after a short wait for them to be reaped), or None."""
        if self.context is None:
            return None
        deadline = time.monotonic() + 2.0
        found: list[str] = []
        for index, process in enumerate(self.context.processes):
            process.join(max(deadline - time.monotonic(), 0.0))
            if process.exitcode not in (None, 0):
                found.append(f"rank {index + 1} exited with code {process.exitcode}")
        return "; ".join(found) or None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        failed = self.dead() if exc is not None and not isinstance(exc, RankFailed) else None
        self._close(wait=exc is None)  # after an error the helpers wait on rank 0 in vain: no grace
        if failed is not None and isinstance(exc, Exception):
            raise RankFailed(f"{failed}: the run on {self.config.world_size} processes stopped") from exc

    def _close(self, wait: bool = True) -> None:
        """Leave the group, wait for the helpers a while (`wait`), then kill those still there."""
        if dist.is_initialized():
            dist.destroy_process_group()
        if self.context is not None:
            deadline = time.monotonic() + (JOIN_SECONDS if wait else 0.0)
            for process in self.context.processes:
                process.join(max(deadline - time.monotonic(), 0.0))
            for process in self.context.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
            self.context = None
        torch.set_num_threads(self.saved_threads)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
