"""Training speed of one run on one process against the same run on several (`world_size`).

    .venv/bin/python bench/distributed_speed.py                   # small on PTB: world_size 1, then 2
    .venv/bin/python bench/distributed_speed.py --steps 50 --json # a quick smoke run, one JSON line

Trains the preset with `model.train.Trainer` exactly as a job does, first on one process with all
of this machine's torch threads, then on `--world-sizes` processes (`model.distributed.Ranks`: the
calling process is rank 0, the others are spawned), each rank with threads / world_size threads
(at least one), as a worker gives them. Each run times `--steps` steps after `--warmup` steps on
rank 0 (its step ends after the all-reduce, so it waits for the slowest rank) and reports words/s
of the whole batch, ms a step and the ratio to one process. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere without installing the package

from model.config import PRESETS, preset  # noqa: E402
from model.data import Corpus  # noqa: E402
from model.distributed import Ranks, threads_per_rank  # noqa: E402
from model.train import Callbacks, StepProgress, Trainer  # noqa: E402


class StepClock(Callbacks):
    """Records when each step ended on rank 0; stops training after `total` steps (before any validation)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ends: list[float] = []

    def on_step(self, progress: StepProgress) -> None:
        self.ends.append(time.perf_counter())

    def should_stop(self) -> bool:
        return len(self.ends) >= self.total


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(preset_name: str, corpus: Corpus, world_size: int, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    config = preset(preset_name, device="cpu", world_size=world_size, max_steps_per_epoch=None)
    clock = StepClock(warmup + steps)
    trainer = Trainer(config, corpus)
    per_rank = threads_per_rank(world_size, threads)
    if world_size == 1:
        torch.set_num_threads(threads)
        trainer.fit(clock)
    else:
        with Ranks(config, corpus, threads=per_rank):
            trainer.fit(clock)
    seconds = clock.ends[-1] - clock.ends[warmup - 1]
    words = steps * config.batch_size * config.num_steps
    return {
        "world_size": world_size,
        "threads_per_rank": per_rank if world_size > 1 else threads,
        "steps": steps,
        "words_per_second": round(words / seconds, 1),
        "ms_per_step": round(1000 * seconds / steps, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PTB_DIR", REPO.parent / "shared/data/ptb")))
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[2], help="besides 1 (default: 2)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps of each run")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads in all")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = parser.parse_args()

    corpus = Corpus.load(args.data)
    results = [run(args.preset, corpus, n, args.steps, args.warmup, args.threads) for n in [1, *args.world_sizes]]
    base = results[0]["words_per_second"]
    for result in results:
        result["vs_one_process"] = round(result["words_per_second"] / base, 3)
    report = {
        "preset": args.preset,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": args.threads,
        "runs": results,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.preset} on {args.data} | {report['cpu']} ({report['cpus']} CPUs) | torch {torch.__version__}")
    print("world_size  threads/rank  steps  words/s  ms/step  vs 1 process")
    for r in results:
        print(
            f"{r['world_size']:>10}  {r['threads_per_rank']:>12}  {r['steps']:>5}  {r['words_per_second']:>7,.0f}  "
            f"{r['ms_per_step']:>7.1f}  {r['vs_one_process']:>11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
