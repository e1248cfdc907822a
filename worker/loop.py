"""The worker loop: requeue expired leases, claim a job, run it, repeat; stop cleanly on SIGTERM.

Modes: `forever` (the service), `once` (at most one job, then exit) and `burst` (until the queue
is empty). SIGTERM or SIGINT sets the shutdown event: a running job stops at its next step
boundary, saves an interrupt checkpoint and goes back to the queue, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Literal

import torch
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.scorings.lease import claim_next_scoring
from app.settings import Settings
from app.store.db import make_engine
from app.store.migrate import schema_is_current
from app.training.queue import (
    claim_next,
    register_worker,
    requeue_expired_leases,
    worker_heartbeat,
    worker_stopped,
)
from app.training.sweep import sweep_checkpoints
from model.config import MAX_WORLD_SIZE
from model.network import resolve_device, supported_precisions
from worker.runner import run_job
from worker.scoring import run_scoring

log = logging.getLogger("worker")

Mode = Literal["forever", "once", "burst"]


def max_world_size(device_choice: str = "auto", setting: int | None = None) -> int:
    """The most processes this worker gives one job: `setting` (LSTMLM_WORKER_MAX_WORLD_SIZE) when
    set, else one per visible GPU when its device for `auto` jobs is CUDA, else one per CPU."""
    if setting is not None:
        return min(setting, MAX_WORLD_SIZE)
    device = resolve_device(device_choice if device_choice in ("cpu", "cuda") else "auto")
    count = torch.cuda.device_count() if device.type == "cuda" else os.cpu_count() or 1
    return max(1, min(count, MAX_WORLD_SIZE))


def worker_capabilities(device_choice: str = "auto", world_size: int = 1) -> list[str]:
    """What this process can run: the CPU always, CUDA when a GPU is visible, the precisions beyond
    fp32 (bf16, tf32) that its device for `auto` jobs computes in, and `world_size:2` ... up to
    `world_size:<world_size>`, one for each number of processes it gives a job (a job needs
    `world_size:N` for N > 1: `app.training.jobs.requirements`)."""
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    device = resolve_device(device_choice if device_choice in ("cpu", "cuda") else "auto")
    precisions = [p for p in supported_precisions(device) if p != "fp32"]
    return devices + precisions + [f"world_size:{n}" for n in range(2, world_size + 1)]


def watch_parent(parent_pid: int, shutdown: threading.Event, interval: float = 1.0) -> threading.Thread:
    """Set `shutdown` when the process that started this one is gone (its parent changes): a worker
    whose service died stops by itself, checkpointing and handing back its job."""

    def watch() -> None:
        while not shutdown.wait(interval):
            if os.getppid() != parent_pid:
                log.warning("parent process %d is gone: stopping", parent_pid)
                shutdown.set()
                return

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


class Worker:
    """One worker process' loop over the queue."""

    def __init__(self, settings: Settings, engine: Engine | None = None, worker_id: str | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.resolved_database_url)
        self.requested_id = worker_id
        self.shutdown = threading.Event()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask for a clean stop (main thread only)."""

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping after the current step", signal.Signals(signum).name)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def wait_for_schema(self) -> bool:
        """Block until migrations have run (the API's start command runs them); False on shutdown."""
        warned = False
        while not self.shutdown.is_set():
            try:
                if schema_is_current(self.engine):
                    return True
            except SQLAlchemyError as exc:
                if not warned:
                    log.warning("database not reachable yet: %s", exc)
            if not warned:
                log.info("waiting for the database schema (run `python -m app migrate`)")
                warned = True
            self.shutdown.wait(self.settings.poll_seconds)
        return False

    def run(self, mode: Mode = "forever") -> int:
        """Process jobs until shutdown (or, in once/burst mode, until there is nothing to do)."""
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        if not self.wait_for_schema():
            return 0
        try:
            sweep_checkpoints(self.engine, self.settings)
        except Exception:  # cleaning up must never keep a worker from working
            log.warning("could not sweep the checkpoints folder", exc_info=True)
        device = self.settings.worker_device
        capabilities = worker_capabilities(device, max_world_size(device, self.settings.worker_max_world_size))
        worker_id = register_worker(self.engine, self.requested_id, capabilities)
        log.info("worker %s started (mode %s, can run %s)", worker_id, mode, ", ".join(capabilities))
        last_beat = time.monotonic()
        try:
            while not self.shutdown.is_set():
                try:
                    jobs, scorings = requeue_expired_leases(self.engine)
                    if jobs or scorings:
                        log.info("requeued or failed %d job(s) and %d scoring(s) whose lease expired", jobs, scorings)
                    job = claim_next(self.engine, worker_id, self.settings.lease_seconds, capabilities)
                    if job is None and self._score_next(worker_id, capabilities):
                        last_beat = time.monotonic()
                        if mode == "once":
                            break
                        continue
                except SQLAlchemyError:
                    log.warning("queue not reachable; retrying", exc_info=True)
                    self.shutdown.wait(self.settings.poll_seconds)
                    continue
                if job is None:
                    if mode != "forever":
                        break
                    if time.monotonic() - last_beat >= self.settings.heartbeat_seconds:
                        self._beat(worker_id)
                        last_beat = time.monotonic()
                    self.shutdown.wait(self.settings.poll_seconds)
                    continue
                log.info("claimed job %s (attempt %d)", job.id, job.attempt)
                try:
                    outcome = run_job(self.engine, self.settings, worker_id, job, self.shutdown)
                    log.info("job %s: %s", job.id, outcome)
                except Exception:
                    # Writing the outcome failed (database unavailable): the lease expires and the
                    # job is requeued by whichever worker looks next.
                    log.exception("job %s: could not record its outcome", job.id)
                self._beat(worker_id)
                last_beat = time.monotonic()
                if mode == "once":
                    break
        finally:
            try:
                worker_stopped(self.engine, worker_id)
            except SQLAlchemyError:
                log.warning("could not record the worker's stop", exc_info=True)
            self.engine.dispose()
        log.info("worker %s stopped", worker_id)
        return 0

    def _score_next(self, worker_id: str, capabilities: list[str]) -> bool:
        """Run one queued scoring job, if there is one (training jobs go first); False when none."""
        scoring = claim_next_scoring(self.engine, worker_id, self.settings.lease_seconds, capabilities)
        if scoring is None:
            return False
        log.info("claimed scoring %s (attempt %d)", scoring.id, scoring.attempt)
        worker_heartbeat(self.engine, worker_id, scoring.id)
        try:
            log.info(
                "scoring %s: %s", scoring.id, run_scoring(self.engine, self.settings, worker_id, scoring, self.shutdown)
            )
        except Exception:
            log.exception("scoring %s: could not record its outcome", scoring.id)
        self._beat(worker_id)
        return True

    def _beat(self, worker_id: str) -> None:
        try:
            worker_heartbeat(self.engine, worker_id, None)
        except SQLAlchemyError:
            log.warning("worker heartbeat failed", exc_info=True)
