"""Run one claimed job: build or resume the trainer, train it through callbacks that write
progress, metrics and checkpoints, and leave the job succeeded, canceled, failed or queued again.

A job with `world_size` N > 1 trains on N processes (`model.distributed`): this one is rank 0 and
does everything above; the others follow its stop decisions and end with the fit. A rank that dies
fails the attempt like any error (requeued to resume from the last checkpoint).

Three things stop training at the next step boundary: a cancel request (seen by `should_stop`,
which asks the database at most every `CANCEL_CHECK_SECONDS`, and by the heartbeat), the worker's
shutdown event (SIGTERM), and a lost lease. A heartbeat thread renews the lease while the main
thread is busy in a long step, a validation pass or the test run.

The job's log (`app.training.logs`) gets the seed's progress lines and epoch summaries, the
checkpoints, starts and resumes, and how the attempt ended; lines wait in `JobCallbacks.pending`
and go out with the attempt's next write.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import torch
from sqlalchemy import Engine

from app.errors import public_text
from app.settings import Settings
from app.store.storage import MissingObject, Storage, open_storage
from app.store.tables import utcnow
from app.training import logs
from app.training.attempt import Attempt, LeaseLost, MetricPoint, NewCheckpoint, new_checkpoint_id
from app.training.checkpoints import EPOCH, FINAL, INTERRUPT, checkpoint_key
from app.training.datasets import vocabulary_report
from app.training.jobs import CANCELED, CANCELING, QUEUED
from app.training.logs import LogLine
from app.training.queue import ClaimedJob, worker_heartbeat
from model import checkpoint
from model.checkpoint import CheckpointError
from model.config import ConfigError, ModelConfig
from model.data import Corpus, CorpusError
from model.distributed import Ranks, threads_per_rank
from model.network import PrecisionError, resolve_device, supports_precision
from model.tokenizers import WORD_LEVEL, Tokenizer
from model.train import Callbacks, Diverged, EpochResult, EvalProgress, StepProgress, Trainer

log = logging.getLogger("worker")

PROGRESS_SECONDS = 1.0  # progress rows at most this often between the seed's ten log points
CANCEL_CHECK_SECONDS = 0.5


class WorseThanUniform(RuntimeError):
    """An epoch's validation perplexity is above the vocabulary size: the model predicts worse than
    guessing every word with the same probability, so the run has diverged (with a finite loss)."""

    def __init__(self, valid_ppl: float, vocab_size: int, epoch: int) -> None:
        super().__init__(
            f"diverged: validation perplexity {valid_ppl:.6g} is above the vocabulary size {vocab_size} "
            f"at epoch {epoch}"
        )
        self.valid_ppl, self.vocab_size, self.epoch = valid_ppl, vocab_size, epoch


# retrying cannot help
PERMANENT_ERRORS = (ConfigError, CorpusError, CheckpointError, Diverged, WorseThanUniform, PrecisionError)


def finite(value: float) -> float | None:
    """JSON and the database take no inf or NaN: a diverged perplexity is stored as null."""
    return value if math.isfinite(value) else None


class Heartbeat(threading.Thread):
    """Renews the lease every `heartbeat_seconds` and notices cancel requests and a lost lease."""

    def __init__(self, attempt: Attempt, engine: Engine, worker_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{attempt.job_id}", daemon=True)
        self.attempt, self.engine, self.worker_id, self.interval = attempt, engine, worker_id, interval
        self.done = threading.Event()
        self.lease_lost = threading.Event()
        self.cancel_requested = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                if self.attempt.renew() == CANCELING:
                    self.cancel_requested.set()
                worker_heartbeat(self.engine, self.worker_id, self.attempt.job_id)
            except LeaseLost:
                self.lease_lost.set()
                return
            except Exception:  # a busy or unreachable database, anything else: try again next beat
                log.warning("heartbeat for %s failed; retrying", self.attempt.job_id, exc_info=True)


class JobCallbacks(Callbacks):
    """Writes what the trainer reports to the database, conditioned on this attempt."""

    def __init__(
        self,
        attempt: Attempt,
        heartbeat: Heartbeat,
        shutdown: threading.Event,
        settings: Settings,
        epochs: int,
    ) -> None:
        self.attempt, self.heartbeat, self.shutdown = attempt, heartbeat, shutdown
        self.tokenizer: Tokenizer | None = None  # the corpus', stored in every checkpoint
        self.settings, self.epochs = settings, epochs
        self.storage = open_storage(settings)
        self.last_report = 0.0
        self.last_check = time.monotonic()
        self.last_checkpoint: NewCheckpoint | None = None
        self.last_progress: dict[str, Any] | None = None  # the last epoch's, stored with its checkpoint
        self.last_step: StepProgress | None = None
        self.logged_epoch = 0  # the epoch whose "Epoch: n Learning rate" line was written
        self.pending: list[LogLine] = []  # log lines for the next write
        self.deadline: float | None = None  # time.monotonic() past which the job is over its wall time
        self.timed_out = False

    def note(self, line: LogLine) -> None:
        """Queue a log line; it is written with the attempt's next write."""
        self.pending.append(line)

    def take_lines(self) -> list[LogLine]:
        lines, self.pending = self.pending, []
        return lines

    # --- what stops training ---

    @property
    def cancel_requested(self) -> bool:
        return self.heartbeat.cancel_requested.is_set()

    @property
    def lease_lost(self) -> bool:
        return self.heartbeat.lease_lost.is_set()

    def _note_status(self, status: str) -> None:
        if status == CANCELING:
            self.heartbeat.cancel_requested.set()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_check >= CANCEL_CHECK_SECONDS and not (self.cancel_requested or self.lease_lost):
            self.last_check = now
            try:
                self._note_status(self.attempt.status())
            except LeaseLost:
                self.heartbeat.lease_lost.set()
        if self.deadline is not None and now > self.deadline:
            self.timed_out = True
        return self.cancel_requested or self.lease_lost or self.shutdown.is_set() or self.timed_out

    # --- progress and metrics ---

    def progress(self, p: StepProgress, phase: str = "train") -> dict[str, Any]:
        return {
            "phase": phase,
            "epoch": p.epoch,
            "epochs": self.epochs,
            "step": p.step,
            "steps": p.steps,
            "global_step": (p.epoch - 1) * p.steps + p.step,
            "fraction": p.fraction,
            "lr": p.lr,
            "wps": p.wps,
            "train_ppl_running": finite(p.ppl),
        }

    def on_step(self, p: StepProgress) -> None:
        self.last_step = p
        if p.epoch != self.logged_epoch:
            self.logged_epoch = p.epoch
            self.note(logs.info(f"Epoch: {p.epoch} Learning rate: {p.lr:.3f}"))
        # The last step of an epoch is reported at once: validation follows.
        if p.step == p.steps or time.monotonic() - self.last_report >= PROGRESS_SECONDS:
            self._report(self.progress(p), [])

    def on_eval_step(self, p: EvalProgress) -> None:
        """Validation and test passes report progress as training does: phase, step, steps, fraction."""
        if p.step == 1 or p.step == p.steps or time.monotonic() - self.last_report >= PROGRESS_SECONDS:
            if p.phase == "test" and self.last_progress is not None:
                base = self.last_progress
            elif self.last_step is not None:
                base = self.progress(self.last_step)
            else:  # resumed straight into the test run
                base = {"epoch": self.epochs, "epochs": self.epochs}
            self._report({**base, "phase": p.phase, "step": p.step, "steps": p.steps, "fraction": p.fraction}, [])

    def on_log(self, p: StepProgress) -> None:
        step = (p.epoch - 1) * p.steps + p.step
        points = [MetricPoint("train_ppl_running", p.ppl, step, p.epoch)]
        if p.step < p.steps:  # at the epoch's last step the epoch's summary (`on_epoch`) writes lr and wps
            points += [MetricPoint("wps", p.wps, step, p.epoch), MetricPoint("lr", p.lr, step, p.epoch)]
        # The seed's progress line: fraction of the epoch, running perplexity, words per second.
        self.note(logs.info(f"{p.fraction:.3f} perplexity: {p.ppl:.3f} speed: {p.wps:.0f} wps"))
        self._report(self.progress(p), [m for m in points if math.isfinite(m.value)])

    def _report(self, progress: dict[str, Any], points: list[MetricPoint]) -> None:
        self.last_report = time.monotonic()
        self._note_status(self.attempt.report(progress, points, self.take_lines()))

    # --- checkpoints ---

    def save(self, trainer: Trainer, kind: str, valid_ppl: float | None) -> NewCheckpoint:
        """Write a checkpoint file for the trainer as it stands (recorded by the caller)."""
        ckpt_id = new_checkpoint_id()
        payload = checkpoint.trainer_payload(trainer, self.tokenizer)
        key = checkpoint_key(self.attempt.job_id, ckpt_id)
        with self.storage.writing(key) as path:  # stored whole, or not at all
            checkpoint.save(payload, path)
            size = path.stat().st_size
        s = trainer.state
        return NewCheckpoint(
            id=ckpt_id,
            epoch=s.epoch,
            step=s.epoch * trainer.train_steps + s.step,
            kind=kind,
            valid_ppl=valid_ppl,
            path=key,
            size_bytes=size,
        )

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        vocab_size = len(trainer.vocab)
        if result.valid_ppl > vocab_size:
            raise WorseThanUniform(result.valid_ppl, vocab_size, result.epoch)
        ckpt = self.save(trainer, EPOCH, finite(result.valid_ppl))
        step = result.epoch * trainer.train_steps
        points = [
            MetricPoint(key, value, step, result.epoch)
            for key, value in (
                ("train_ppl", result.train_ppl),
                ("valid_ppl", result.valid_ppl),
                ("lr", result.lr),
                ("wps", result.wps),
            )
            if math.isfinite(value)
        ]
        last = result.epoch == self.epochs
        progress = {
            "phase": "test" if last else "train",
            "epoch": result.epoch,
            "epochs": self.epochs,
            "step": trainer.train_steps,
            "steps": trainer.train_steps,
            "global_step": step,
            "fraction": 1.0,
            "lr": result.lr,
            "wps": result.wps,
            "train_ppl_running": finite(result.train_ppl),
        }
        best = trainer.state.best_valid_ppl
        self.note(logs.info(f"Epoch: {result.epoch} Train Perplexity: {result.train_ppl:.3f}"))
        self.note(logs.info(f"Epoch: {result.epoch} Valid Perplexity: {result.valid_ppl:.3f}"))
        self.note(logs.info(f"checkpoint {ckpt.id} written: epoch {result.epoch}, step {ckpt.step}"))
        try:
            status = self.attempt.record_epoch(
                ckpt,
                points,
                train_ppl=finite(result.train_ppl),
                valid_ppl=finite(result.valid_ppl),
                best_valid_ppl=finite(best) if best is not None else None,
                progress=progress,
                keep_last=self.settings.keep_last_checkpoints,
                lines=self.take_lines(),
            )
        except LeaseLost:
            self.storage.delete(ckpt.path)  # a newer attempt owns the job's folder now
            raise
        self.last_checkpoint = ckpt
        self.last_progress = progress
        self._note_status(status)
        log.info(
            "job %s epoch %d: train %.3f valid %.3f lr %.3g %.0f wps",
            self.attempt.job_id,
            result.epoch,
            result.train_ppl,
            result.valid_ppl,
            result.lr,
            result.wps,
        )


def worker_device(config: ModelConfig, settings: Settings) -> str:
    """A job's own device choice wins; `auto` defers to the worker's setting."""
    return settings.worker_device if config.device == "auto" else config.device


def check_worker_precision(config: ModelConfig, device: str) -> None:
    """`PrecisionError` before any work when this worker's device cannot train in the job's precision."""
    resolved = resolve_device(device)
    if not supports_precision(resolved, config.precision):
        raise PrecisionError(
            f"precision {config.precision!r} is not supported by this worker's {resolved.type} "
            f"(device {device!r}); resubmit with precision 'fp32' or run it on a worker whose device supports it"
        )


def run_job(engine: Engine, settings: Settings, worker_id: str, job: ClaimedJob, shutdown: threading.Event) -> str:
    """Train `job` and record how it ended; returns the job's status afterwards ("lost" if taken away)."""
    attempt = Attempt(engine, job.id, job.attempt, worker_id, settings.lease_seconds, open_storage(settings))
    heartbeat = Heartbeat(attempt, engine, worker_id, settings.heartbeat_seconds)
    heartbeat.start()
    try:
        return _train(attempt, heartbeat, settings, job, shutdown)
    except LeaseLost:
        log.warning("job %s attempt %d: lease lost; another attempt owns it now", job.id, job.attempt)
        return "lost"
    finally:
        heartbeat.done.set()
        heartbeat.join()


def error_text(exc: BaseException) -> str:
    """An error as a job shows it: its type and message, server paths reduced to file names, bounded."""
    return public_text(f"{type(exc).__name__}: {exc}")


def resume_point(
    attempt: Attempt, job: ClaimedJob, corpus: Corpus, device: str, storage: Storage
) -> tuple[Trainer, NewCheckpoint] | None:
    """The trainer of the newest checkpoint that loads, newest first; None when none does.

    A missing or corrupt latest checkpoint (a disk error, a file removed by hand) falls back to the
    one before it; what was recorded after the one used is dropped, so the history stays one run.
    """
    for row in attempt.checkpoints_newest_first():
        try:
            trainer = checkpoint.resume_trainer(checkpoint.load(storage.local_path(row.path)), corpus, device)
        except (CheckpointError, MissingObject) as exc:
            log.warning("job %s: checkpoint %s unusable (%s); trying the one before", job.id, row.id, exc)
            attempt.forget_checkpoint(row.id)
            continue
        log.info(
            "job %s attempt %d: resuming at epoch %d step %d (checkpoint %s)",
            job.id,
            job.attempt,
            trainer.state.epoch,
            trainer.state.step,
            row.id,
        )
        return trainer, NewCheckpoint(row.id, trainer.state.epoch, row.step, EPOCH, None, row.path, 0)
    return None


def _train(
    attempt: Attempt, heartbeat: Heartbeat, settings: Settings, job: ClaimedJob, shutdown: threading.Event
) -> str:
    storage = open_storage(settings)
    try:
        attempt.sweep_folder()  # this worker holds the job: what a dead attempt left is garbage now
        config = ModelConfig.from_dict(job.config)
        device = worker_device(config, settings)
        check_worker_precision(config, device)
        recorded = Tokenizer(job.dataset_tokenizer) if job.dataset_tokenizer in WORD_LEVEL else None
        corpus = Corpus.load(storage.local_tree(job.dataset_path), config.vocab_size, recorded)
        attempt.record_vocabulary(vocabulary_report(corpus, config.vocab_size))
        resumed = resume_point(attempt, job, corpus, device, storage) if job.checkpoint_path is not None else None
        if resumed is not None:
            trainer, resumed_from = resumed
            s = trainer.state
            started = (
                f"attempt {job.attempt} of {job.max_attempts}: resuming from checkpoint {resumed_from.id} "
                f"({s.epoch} epochs and {s.step} steps done) on {trainer.device}"
            )
        else:
            trainer = Trainer(config.replace(device=device), corpus)
            log.info("job %s attempt %d: starting on %s", job.id, job.attempt, trainer.device)
            started = f"attempt {job.attempt} of {job.max_attempts}: starting on {trainer.device}"
        if trainer.distributed:
            started += f" x {trainer.world_size} processes"
        attempt.log([logs.info(f"{started} (worker {attempt.worker_id})")])
        callbacks = JobCallbacks(attempt, heartbeat, shutdown, settings, config.max_max_epoch)
        if resumed is not None:
            callbacks.last_checkpoint = resumed_from  # this run's last one until it writes another
        spent = (utcnow() - job.started_at).total_seconds()
        callbacks.deadline = time.monotonic() + settings.max_job_seconds - spent
        callbacks.tokenizer = corpus.tokenizer
        if trainer.distributed:
            # This process is rank 0 (callbacks, checkpoints, lease); ranks 1..N-1 live for the fit.
            threads = threads_per_rank(trainer.world_size, settings.torch_threads or torch.get_num_threads())
            resume_path = storage.local_path(resumed_from.path) if resumed is not None else None
            with Ranks(trainer.config, corpus, resume_path, threads):
                finished = trainer.fit(callbacks)
        else:
            finished = trainer.fit(callbacks)
    except LeaseLost:
        raise
    except PERMANENT_ERRORS as exc:
        log.error("job %s failed: %s", job.id, exc)
        reason = public_text(str(exc)) if isinstance(exc, WorseThanUniform) else error_text(exc)
        attempt.fail(reason, [logs.error(f"failed: {reason}")])
        return "failed"
    except Exception as exc:
        message = error_text(exc)
        log.exception("job %s attempt %d raised", job.id, job.attempt)
        if job.attempt < job.max_attempts:
            # The trainer may be in a bad state: the next attempt resumes from the last good
            # checkpoint, after a backoff that doubles with every attempt.
            backoff = settings.retry_backoff_seconds * 2 ** (job.attempt - 1)
            attempt.stop(
                QUEUED,
                None,
                settings.keep_last_checkpoints,
                error=f"attempt {job.attempt}: {message}",
                lines=[
                    logs.warning(
                        f"attempt {job.attempt} raised {message}; requeued to resume from the last checkpoint "
                        f"in {backoff:g} s"
                    )
                ],
                retry_in=backoff,
            )
            return QUEUED
        reason = public_text(f"{message} (attempt {job.attempt} of {job.max_attempts})")
        attempt.fail(reason, [logs.error(f"failed: {reason}")])
        return "failed"

    if finished:
        test_ppl = finite(trainer.state.test_ppl if trainer.state.test_ppl is not None else math.nan)
        last = callbacks.last_checkpoint
        final = callbacks.save(trainer, FINAL, finite(trainer.state.history[-1]["valid_ppl"]))
        points = [] if test_ppl is None else [MetricPoint("test_ppl", test_ppl, final.step, trainer.state.epoch)]
        callbacks.note(
            logs.info(f"Test Perplexity: {test_ppl:.3f}" if test_ppl is not None else "Test Perplexity: inf")
        )
        callbacks.note(logs.info(f"final checkpoint {final.id} written; succeeded"))
        try:
            final_progress = {**callbacks.last_progress, "phase": "done"} if callbacks.last_progress else None
            attempt.succeed(
                test_ppl,
                final,
                last.id if last else None,
                points,
                progress=final_progress,
                lines=callbacks.take_lines(),
            )
        except LeaseLost:
            callbacks.storage.delete(final.path)
            raise
        log.info("job %s succeeded: test perplexity %s", job.id, test_ppl)
        return "succeeded"
    if callbacks.lease_lost:
        raise LeaseLost(job.id)
    if callbacks.timed_out and not (callbacks.cancel_requested or shutdown.is_set()):
        reason = f"over the maximum wall time of {settings.max_job_seconds:,.0f} s (LSTMLM_MAX_JOB_SECONDS)"
        attempt.fail(reason, [*callbacks.take_lines(), logs.error(f"failed: {reason}")])
        log.error("job %s failed: over its wall time", job.id)
        return "failed"
    saved = _interrupt_checkpoint(callbacks, trainer)
    status = CANCELED if callbacks.cancel_requested else QUEUED
    where = f"at epoch {trainer.state.epoch + 1} step {trainer.state.step}"
    why = "canceled" if status == CANCELED else "handed back to the queue (the worker is stopping)"
    saved_line = f"; interrupt checkpoint {saved.id} written" if saved is not None else ""
    callbacks.note(logs.info(f"{why} {where}{saved_line}"))
    note = None
    if status == QUEUED:
        last = callbacks.last_checkpoint
        if saved is not None:
            resumes = f"resumes from its checkpoint {where}"
        elif last is not None:
            resumes = f"resumes from the checkpoint of epoch {last.epoch}"
        else:
            resumes = "starts again from the beginning (no checkpoint yet)"
        note = f"handed back {where} (the worker is stopping); {resumes}"
    try:
        attempt.stop(status, saved, settings.keep_last_checkpoints, lines=callbacks.take_lines(), note=note)
    except LeaseLost:
        if saved is not None:
            callbacks.storage.delete(saved.path)
        raise
    done = "canceled" if status == CANCELED else "handed back"
    log.info("job %s %s at epoch %d step %d", job.id, done, trainer.state.epoch + 1, trainer.state.step)
    return status


def _interrupt_checkpoint(callbacks: JobCallbacks, trainer: Trainer) -> NewCheckpoint | None:
    """A mid-epoch checkpoint, unless training has not moved since the last one."""
    s = trainer.state
    step = s.epoch * trainer.train_steps + s.step
    last = callbacks.last_checkpoint
    if step == 0 or (last is not None and last.step == step):
        return None
    return callbacks.save(trainer, INTERRUPT, None)
