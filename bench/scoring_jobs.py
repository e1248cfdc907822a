"""Scoring-job throughput against the direct scoring path: the PTB test set as one text.

    .venv/bin/python bench/scoring_jobs.py                                  # random weights, small shapes
    .venv/bin/python bench/scoring_jobs.py --checkpoint runs/ptb-small/best.pt --repeat 3

Direct: `model.inference.score_sentences` over groups of `LSTMLM_MAX_SENTENCES` lines, what one
`/v1/score` request per group computes (without HTTP). Job: the same text submitted with
`app.scorings.jobs.submit` and run in this process by the worker's `run_scoring` (claim, chunks of
`--chunk` lines, the JSON Lines file written and synced and each chunk recorded in SQLite). The runs
take turns and each keeps its best time; prints tokens/s of both and job time / direct time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from serving import JOB_ID, PTB_DIR, checkpoint_file, load_served, prepare_service
from sqlalchemy.orm import Session

from app.inference.scoring import ScoreOptions
from app.scorings import jobs
from app.scorings.lease import claim_next_scoring
from app.settings import Settings
from app.store.db import make_engine
from model.inference import score_sentences
from worker.scoring import run_scoring


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=PTB_DIR)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--lines", type=int, default=0, help="the first N lines of the test set (0: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = jobs.lines_of((args.data / "ptb.test.txt").read_text())
    lines = lines[: args.lines] if args.lines else lines
    text = "".join(f"{line}\n" for line in lines)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        path = checkpoint_file(args.checkpoint, args.data, Path(tmp))
        prepare_service(data_dir, path)
        settings = Settings(_env_file=None, data_dir=data_dir, scoring_chunk_lines=args.chunk)  # type: ignore[call-arg]
        engine = make_engine(settings.resolved_database_url)
        model, vocab, _ = load_served(path)
        tokens = sum(len(line.split()) + 1 for line in lines)

        def direct() -> None:
            step = settings.max_sentences
            for start in range(0, len(lines), step):
                score_sentences(model, vocab, [line.split() for line in lines[start : start + step]])

        def job() -> None:
            with Session(engine) as session:
                jobs.submit(engine, session, settings, JOB_ID, ScoreOptions(), raw=text.encode())
            claimed = claim_next_scoring(engine, "bench", settings.lease_seconds)
            assert claimed is not None
            assert run_scoring(engine, settings, "bench", claimed, threading.Event()) == "succeeded"

        best = {"direct": float("inf"), "job": float("inf")}
        for _ in range(args.repeat):
            for name, run in (("direct", direct), ("job", job)):
                started = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - started)
        engine.dispose()
    print(f"{len(lines)} lines, {tokens} tokens (words and <eos>), {torch.get_num_threads()} threads")
    for name, seconds in best.items():
        print(f"{name:>6}: {seconds:7.2f} s  {tokens / seconds:9.0f} tokens/s")
    print(f"job / direct: {best['job'] / best['direct']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
