"""Training speed of a preset on this machine: fp32, bf16 and the pytorch/examples fp32 step, in one process.

    .venv/bin/python bench/train_speed.py                      # small on PTB, 200 timed steps of each
    .venv/bin/python bench/train_speed.py --steps 20 --json    # a quick smoke run, one JSON line
    .venv/bin/python bench/train_speed.py --precisions fp32    # fp32 only (and the examples step)

Trains with `model.train.Trainer` exactly as a job would (same loss, clipping, state handling), one
trainer per precision (`fp32`, and `bf16` where the device has it; `tf32` on a GPU when asked), and
the training step of pytorch/examples word_language_model on the same shapes and data (CPU only).
After a warm-up of each, the runs take turns in `--rounds` rounds of steps/rounds steps, so a
machine whose speed drifts (shared virtual CPUs) slows them alike. Reports words/s over all timed
steps, the achieved GFLOP/s (training FLOPs per token from `ModelConfig.train_flops_per_token` x
words/s), the fraction of an fp32 `torch.mm` peak measured here with the same thread count (for bf16
also of a bf16 peak), and the ratios between the runs.

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

from examples_baseline import ExamplesLoop  # noqa: E402
from serving import matmul_peak_gflops  # noqa: E402

from model.config import PRESETS, preset  # noqa: E402
from model.data import Corpus, epoch_size  # noqa: E402
from model.network import resolve_device, supports_precision  # noqa: E402
from model.train import Callbacks, StepProgress, Trainer  # noqa: E402


class StepClock(Callbacks):
    """Records when each step ended; stops training after `total` steps (before any validation)."""

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self.ends: list[float] = []

    def on_step(self, progress: StepProgress) -> None:
        # The trainer reads loss.item() every step, so the device is synchronised here already.
        self.ends.append(time.perf_counter())

    def should_stop(self) -> bool:
        return len(self.ends) >= self.total


def bf16_peak_gflops(n: int, device: torch.device) -> float:
    """GFLOP/s of an n x n x n bf16 `torch.mm`, best of three."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base = preset(args.preset, device=device.type)
    corpus = Corpus.load(args.data, base.vocab_size)
    rounds = max(1, min(args.rounds, args.steps))
    per_round = args.steps // rounds
    steps = per_round * rounds
    available = epoch_size(corpus.train.numel(), base.batch_size, base.num_steps)
    if available < args.warmup + steps:
        raise SystemExit(f"the training file has {available} steps an epoch; {args.warmup + steps} asked for")
    precisions = [p for p in args.precisions.split(",") if supports_precision(device, p)]
    skipped = [p for p in args.precisions.split(",") if p not in precisions]

    # name -> a function running n more steps and returning their seconds
    runners: dict[str, Any] = {}
    for precision in precisions:
        trainer, clock = Trainer(base.replace(precision=precision), corpus), StepClock()

        def train(n: int, trainer: Trainer = trainer, clock: StepClock = clock) -> float:
            clock.total += n
            start = time.perf_counter()
            trainer.fit(clock)
            return time.perf_counter() - start

        runners[precision] = train
    vocab = len(corpus.vocab)
    if args.baseline and device.type == "cpu":
        c = base
        loop = ExamplesLoop(corpus.train, vocab, c.hidden_size, c.num_layers, c.batch_size, c.num_steps)
        runners["examples_fp32"] = loop.run
    for train in runners.values():
        train(args.warmup)
    seconds = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for name, train in runners.items():
            seconds[name] += train(per_round)

    words = steps * base.batch_size * base.num_steps
    flops = base.train_flops_per_token(vocab)
    peak = matmul_peak_gflops(args.peak_size, device=device)
    peak_bf16 = bf16_peak_gflops(args.peak_size, device) if "bf16" in precisions else None
    result: dict[str, Any] = {
        "preset": args.preset,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "vocab": vocab,
        "steps": steps,
        "rounds": rounds,
        "train_mflop_per_token": round(flops / 1e6, 2),
        "matmul_peak_gflops": round(peak, 1),
        "matmul_peak_bf16_gflops": round(peak_bf16, 1) if peak_bf16 else None,
        "not_supported_here": skipped,
        "runs": {},
    }
    for name, secs in seconds.items():
        wps = words / secs
        gflops = flops * wps / 1e9
        result["runs"][name] = {
            "seconds": round(secs, 3),
            "words_per_s": round(wps, 1),
            "ms_per_step": round(1000 * secs / steps, 2),
            "achieved_gflops": round(gflops, 2),
            "fraction_of_peak": round(gflops / peak, 4),
        }
    wps_of = {name: r["words_per_s"] for name, r in result["runs"].items()}
    ratios: dict[str, float] = {}
    for name in precisions:
        if "examples_fp32" in wps_of:
            ratios[f"{name}_vs_examples_fp32"] = round(wps_of[name] / wps_of["examples_fp32"], 3)
        if name != "fp32" and "fp32" in wps_of:
            ratios[f"{name}_vs_fp32"] = round(wps_of[name] / wps_of["fp32"], 3)
    result["ratios"] = ratios
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ptb")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps of each run")
    parser.add_argument("--rounds", type=int, default=5, help="turns the runs take (steps/rounds steps each)")
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated: fp32, bf16, tf32 (those the device lacks are skipped)",
    )
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
    print(f"{r['steps']} timed steps of each run in {r['rounds']} alternating rounds")
    peaks = f"fp32 {r['matmul_peak_gflops']}" + (
        f", bf16 {r['matmul_peak_bf16_gflops']}" if r["matmul_peak_bf16_gflops"] else ""
    )
    print(f"train MFLOP/token {r['train_mflop_per_token']}; matmul peak GFLOP/s: {peaks}")
    print(f"{'run':16} {'words/s':>10} {'ms/step':>9} {'GFLOP/s':>9} {'of fp32 peak':>13}")
    for name, run_ in r["runs"].items():
        print(
            f"{name:16} {run_['words_per_s']:10.0f} {run_['ms_per_step']:9.1f} {run_['achieved_gflops']:9.1f} "
            f"{run_['fraction_of_peak']:13.1%}"
        )
    for name, ratio in r["ratios"].items():
        print(f"{name:24} {ratio:6.2f}x")
    if r["not_supported_here"]:
        print(f"not supported here: {', '.join(r['not_supported_here'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
