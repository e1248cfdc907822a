"""Generation latency of the small preset at batch 1: milliseconds per token, directly and streamed over HTTP.

    .venv/bin/python bench/generate_speed.py                                # random weights, small shapes
    .venv/bin/python bench/generate_speed.py --checkpoint runs/ptb-small/best.pt
    .venv/bin/python bench/generate_speed.py --json                         # one JSON line

Direct: `model.inference.generate_stream` with n = 1, the time between consecutive tokens (the
prompt's forward excluded: it is reported apart as the time to the first token), for several PTB
test prompts x `--tokens` tokens each, in three modes: greedy, sampling at temperature 1, and
nucleus sampling (top_p 0.9). `<eos>` does not stop these runs, so every prompt yields the same
number of tokens. HTTP: `POST /v1/generate` with `stream: true` to uvicorn in a subprocess, the time
between consecutive `data:` events as the client receives them. Every mode runs in fp32 and, where
the CPU has bf16, in bf16 (`precision`), the two taking turns mode by mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from serving import JOB_ID, PTB_DIR, checkpoint_file, load_served, prepare_service, serve

from model.inference import GeneratedToken, generate_stream
from model.network import supports_precision

MODES: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "sample": {"temperature": 1.0},
    "top_p_0.9": {"temperature": 1.0, "top_p": 0.9},
}


def summary(gaps: list[float], first: list[float]) -> dict[str, float]:
    """Median, p90 and mean ms per token, and the median ms to the first token."""
    ms = sorted(1000 * g for g in gaps)
    return {
        "tokens": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "first_token_ms": round(1000 * statistics.median(first), 3),
    }


def direct(model: Any, vocab: Any, prompts: list[list[str]], tokens: int, options: dict[str, Any]) -> dict[str, float]:
    gaps: list[float] = []
    first: list[float] = []
    for seed, prompt in enumerate(prompts):
        start = last = time.perf_counter()
        events = generate_stream(model, vocab, prompt, max_tokens=tokens, seed=seed, stop_at_eos=False, **options)
        for event in events:
            if isinstance(event, GeneratedToken):
                now = time.perf_counter()
                (first if last == start else gaps).append(now - last)
                last = now
    return summary(gaps, first)


def over_http(url: str, prompts: list[list[str]], tokens: int, options: dict[str, Any]) -> dict[str, float]:
    gaps: list[float] = []
    first: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for seed, prompt in enumerate(prompts):
            body = {"model": JOB_ID, "prompt": " ".join(prompt), "max_tokens": tokens, "seed": seed, "stream": True}
            start = last = time.perf_counter()
            with client.stream("POST", "/v1/generate", json={**body, **options}) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("data: {") and '"token":"' in line:
                        now = time.perf_counter()
                        (first if last == start else gaps).append(now - last)
                        last = now
    return summary(gaps, first)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = (args.data / "ptb.test.txt").read_text().splitlines()
    prompts = [line.split()[:5] for line in lines[: args.prompts]]
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint_file(args.checkpoint, args.data, Path(tmp))
        model, vocab, _ = load_served(path)
        result: dict[str, Any] = {
            "checkpoint": str(args.checkpoint) if args.checkpoint else "small preset, random weights",
            "threads": torch.get_num_threads(),
            "prompts": len(prompts),
            "tokens_per_prompt": args.tokens,
        }
        precisions = ["fp32"] + (["bf16"] if supports_precision(torch.device("cpu"), "bf16") else [])
        for precision in precisions:  # warm-up (and the bf16 copy of the softmax weight)
            direct(model, vocab, prompts[:1], 20, {"precision": precision})
        for name, options in MODES.items():
            for precision in precisions:
                suffix = "" if precision == "fp32" else f"_{precision}"
                result[f"direct_{name}{suffix}"] = direct(
                    model, vocab, prompts, args.tokens, {**options, "precision": precision}
                )
        if not args.no_http:
            data_dir = Path(tmp) / "data"
            prepare_service(data_dir, path)
            with serve(data_dir, args.threads, max_generate_tokens=max(args.tokens, 1000)) as url:
                over_http(url, prompts[:1], 20, {})  # warm-up: loads the model
                # Over HTTP <eos> ends a continuation: these runs may be shorter than --tokens.
                for name, options in MODES.items():
                    for precision in precisions:
                        suffix = "" if precision == "fp32" else f"_{precision}"
                        result[f"http_stream_{name}{suffix}"] = over_http(
                            url, prompts, args.tokens, {**options, "precision": precision}
                        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: small preset, random weights)")
    parser.add_argument("--data", type=Path, default=PTB_DIR, help="the PTB folder (prompts from its test file)")
    parser.add_argument("--prompts", type=int, default=5, help="prompts: the first 5 words of the first test lines")
    parser.add_argument("--tokens", type=int, default=200, help="tokens generated per prompt")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP run")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    r = run(args)
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{r['checkpoint']}: {r['prompts']} prompts x {r['tokens_per_prompt']} tokens, batch 1, {r['threads']} threads"
    )
    print(f"{'path':28} {'tokens':>7} {'median ms':>10} {'p90 ms':>8} {'mean ms':>8} {'first ms':>9}")
    for key, v in r.items():
        if isinstance(v, dict):
            print(
                f"{key:28} {v['tokens']:7d} {v['median_ms']:10.3f} {v['p90_ms']:8.3f} {v['mean_ms']:8.3f} "
                f"{v['first_token_ms']:9.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
