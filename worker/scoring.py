"""Run one claimed scoring: read the text, score it chunk by chunk, store each chunk's lines as
one results part and record the chunk, until the text ends, a cancel request or a shutdown.

Chunks start at multiples of `settings.scoring_chunk_lines` and are scored in one batch each, so
a resumed scoring computes exactly the chunks an uninterrupted one would: the results are the
same. A chunk's part is stored whole before its record; a resumed attempt removes the parts from
its first line on (written, not recorded) and writes them again.
"""

from __future__ import annotations

import json
import logging
import threading

from sqlalchemy import Engine

from app.inference.scoring import sentence_of, summarize
from app.scorings import jobs
from app.scorings.lease import ClaimedScoring, ScoringAttempt
from app.settings import Settings
from app.store.storage import MissingObject, open_storage
from app.training.attempt import LeaseLost
from app.training.jobs import CANCELED, CANCELING, FAILED, QUEUED, SUCCEEDED
from app.training.queue import worker_heartbeat
from model import checkpoint
from model.checkpoint import CheckpointError
from model.inference import score_sentences
from model.tokenizers import Tokenizer

log = logging.getLogger("worker")


class LeaseKeeper(threading.Thread):
    """Renews a scoring's lease (and the worker's heartbeat) every `interval` seconds, so that a
    chunk that takes longer than a lease (loading a large model, a slow machine) does not let the
    lease expire under a live worker, whoever sweeps expired leases."""

    def __init__(self, attempt: ScoringAttempt, engine: Engine, worker_id: str, interval: float) -> None:
        super().__init__(name=f"lease-{attempt.claimed.id}", daemon=True)
        self.attempt, self.engine, self.worker_id, self.interval = attempt, engine, worker_id, interval
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.attempt.renew()
                worker_heartbeat(self.engine, self.worker_id, self.attempt.claimed.id)
            except LeaseLost:  # the next record says so to the scoring loop
                return
            except Exception:  # a busy or unreachable database: try again next beat
                log.warning("lease renewal for %s failed; retrying", self.attempt.claimed.id, exc_info=True)


def run_scoring(
    engine: Engine, settings: Settings, worker_id: str, claimed: ClaimedScoring, shutdown: threading.Event
) -> str:
    """Score (the rest of) `claimed`; returns how it ended (its status, or "lost")."""
    attempt = ScoringAttempt(engine, claimed, worker_id, settings.lease_seconds)
    keeper = LeaseKeeper(attempt, engine, worker_id, settings.heartbeat_seconds)
    keeper.start()
    try:
        return _score(attempt, settings, claimed, shutdown)
    except LeaseLost:
        log.warning("scoring %s attempt %d: lease lost", claimed.id, claimed.attempt)
        return "lost"
    finally:
        keeper.done.set()
        keeper.join()


def _score(attempt: ScoringAttempt, settings: Settings, claimed: ClaimedScoring, shutdown: threading.Event) -> str:
    try:
        storage = open_storage(settings)
        payload = checkpoint.load(storage.local_path(claimed.checkpoint_path))
        model, vocab, _ = checkpoint.load_model(payload, "cpu")
        text = storage.local_path(claimed.input_path).read_bytes().decode("utf-8")
    except (CheckpointError, MissingObject, OSError, UnicodeDecodeError) as exc:
        attempt.finish(FAILED, f"{type(exc).__name__}: {exc}")
        return FAILED
    options = claimed.options
    pretokenized = jobs.pretokenized(options)
    try:
        tokenizer = Tokenizer() if pretokenized else checkpoint.tokenizer_of(payload)
    except CheckpointError as exc:
        attempt.finish(FAILED, f"{type(exc).__name__}: {exc}")
        return FAILED
    lines = jobs.lines_of(text)
    log10, score_eos = bool(options["log10"]), bool(options.get("score_eos", True))
    precision = jobs.precision_of(options)
    chunk = settings.scoring_chunk_lines
    done, size, sums = claimed.lines_done, claimed.bytes_done, dict(claimed.sums)
    sums[jobs.ATTEMPT_START] = done  # where this attempt's speed counts from (its ETA)

    for first, entry in jobs.result_parts(storage, claimed.id):
        if first >= done:  # written by an attempt that died before recording it
            storage.delete(entry.key)
    while done < len(lines):
        if shutdown.is_set():
            attempt.finish(
                QUEUED,
                note=f"handed back after line {done:,} of {len(lines):,} (the worker is stopping); "
                f"resumes at line {done + 1:,}",
            )
            return QUEUED
        block = lines[done : done + chunk]
        sentences = [sentence_of(line, tokenizer, pretokenized) for line in block]
        with_tokens = score_sentences(
            model, vocab, [s.tokens for s in sentences], score_eos=score_eos, precision=precision
        )
        records = []
        for offset, (score, sentence) in enumerate(zip(with_tokens, sentences, strict=True)):
            scored = summarize(score, log10, sentence.num_words, sentence.num_bytes)
            jobs.add_to_sums(sums, score.logprobs, score.is_unk, sentence.num_words, sentence.num_bytes)
            record = {
                "line": done + offset + 1,
                "num_tokens": scored.num_tokens,
                "num_unk": scored.num_unk,
                "num_words": scored.num_words,
                "num_bytes": scored.num_bytes,
                "total_logprob": scored.total_logprob,
                "perplexity": scored.perplexity,
                "perplexity_without_unk": scored.perplexity_without_unk,
                "word_perplexity": scored.word_perplexity,
                "bits_per_byte": scored.bits_per_byte,
                "unk_rate": scored.unk_rate,
            }
            records.append(json.dumps(record) + "\n")
        data = "".join(records).encode("utf-8")
        with storage.writing(jobs.part_key(claimed.id, done)) as part:
            part.write_bytes(data)
        done, size = done + len(block), size + len(data)
        if attempt.progress(done, size, sums) == CANCELING:
            attempt.finish(CANCELED)
            return CANCELED
    attempt.finish(SUCCEEDED)
    return SUCCEEDED
