"""Training speed of a preset on this machine, against the machine's own fp32 matmul peak.

    .venv/bin/python bench/train_speed.py                      # small on PTB, 200 timed steps
    .venv/bin/python bench/train_speed.py --steps 20 --json    # a quick smoke run, one JSON line

Trains with `model.train.Trainer` exactly as a job would (same loss, clipping, state handling),
times the steps after a warm-up, and reports words/s, the achieved GFLOP/s (training FLOPs per token
from `ModelConfig.train_flops_per_token` x words/s), the fraction of a `torch.mm` peak measured here
with the same thread count, and the ratio to the pytorch/examples word_language_model baseline
(~2,700 words/s with the small shapes on the 2-core development machines, REFERENCE.md 1.4) and to the
project's 3,200 words/s target.

Run it on an otherwise idle machine: when other processes share the cores, the OpenMP threads of a
multi-threaded step wait for each other and the numbers collapse (compare `--threads 1`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere without installing the package
sys.path.insert(0, str(REPO / "bench"))

from examples_baseline import time_examples_steps  # noqa: E402
from serving import matmul_peak_gflops  # noqa: E402

from model.config import PRESETS, preset  # noqa: E402
from model.data import Corpus, epoch_size  # noqa: E402
from model.network import resolve_device  # noqa: E402
from model.train import Callbacks, StepProgress, Trainer  # noqa: E402

BASELINE_WPS = 2700.0  # pytorch/examples word_language_model, small shapes, 2-core machine
TARGET_WPS = 3200.0


class StepClock(Callbacks):
    """Records when each step ended; stops training after `total` steps (before any validation)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ends: list[float] = []

    def on_step(self, progress: StepProgress) -> None:
        # The trainer reads loss.item() every step, so the device is synchronised here already.
        self.ends.append(time.perf_counter())

    def should_stop(self) -> bool:
        return len(self.ends) >= self.total


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = preset(args.preset, device=device.type)
    corpus = Corpus.load(args.data, config.vocab_size)
    total = args.warmup + args.steps
    available = epoch_size(corpus.train.numel(), config.batch_size, config.num_steps)
    if available < total:
        raise SystemExit(f"the training file has {available} steps an epoch; {total} asked for")

    trainer = Trainer(config, corpus)
    clock = StepClock(total)
    trainer.fit(clock)
    # From the end of the last warm-up step to the end of the last step: exactly `steps` steps.
    seconds = clock.ends[-1] - clock.ends[args.warmup - 1]
    wps = args.steps * config.batch_size * config.num_steps / seconds

    vocab = len(corpus.vocab)
    baseline_wps = None
    if args.baseline and device.type == "cpu":
        c = config
        seconds_base = time_examples_steps(
            corpus.train, vocab, c.hidden_size, c.num_layers, c.batch_size, c.num_steps, args.steps, args.warmup
        )
        baseline_wps = args.steps * c.batch_size * c.num_steps / seconds_base
    gflops = config.train_flops_per_token(vocab) * wps / 1e9
    peak = matmul_peak_gflops(args.peak_size, device=device)
    return {
        "preset": args.preset,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "vocab": vocab,
        "steps": args.steps,
        "seconds": round(seconds, 3),
        "words_per_s": round(wps, 1),
        "ms_per_step": round(1000 * seconds / args.steps, 2),
        "train_mflop_per_token": round(config.train_flops_per_token(vocab) / 1e6, 2),
        "achieved_gflops": round(gflops, 2),
        "matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak": round(gflops / peak, 4),
        "examples_words_per_s": round(baseline_wps, 1) if baseline_wps else None,
        "vs_examples_measured": round(wps / baseline_wps, 3) if baseline_wps else None,
        "vs_baseline_2700": round(wps / BASELINE_WPS, 3),
        "vs_target_3200": round(wps / TARGET_WPS, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptb")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (at least 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmul peak")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time pytorch/examples word_language_model's step on the same shapes (CPU only)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")

    r = run(args)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['preset']} on {r['gpu'] or r['device']}, {r['threads']} threads, vocabulary {r['vocab']}")
    print(f"{r['steps']} steps in {r['seconds']:.2f} s ({r['ms_per_step']:.1f} ms a step)")
    print(f"words/s            {r['words_per_s']:10.0f}")
    print(f"train MFLOP/token  {r['train_mflop_per_token']:10.2f}")
    print(f"achieved GFLOP/s   {r['achieved_gflops']:10.2f}")
    print(f"matmul peak GFLOP/s {r['matmul_peak_gflops']:9.1f}")
    print(f"fraction of peak   {r['fraction_of_peak']:10.1%}")
    if r["examples_words_per_s"]:
        print(f"examples words/s   {r['examples_words_per_s']:10.0f}  (pytorch/examples step, same shapes)")
        print(f"vs examples        {r['vs_examples_measured']:10.2f}x")
    print(f"vs baseline 2,700  {r['vs_baseline_2700']:10.2f}x")
    print(f"vs target 3,200    {r['vs_target_3200']:10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
