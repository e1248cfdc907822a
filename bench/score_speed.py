"""Scoring throughput of the small preset: 1,000 PTB test sentences, directly and through HTTP.

    .venv/bin/python bench/score_speed.py                                   # random weights, small shapes
    .venv/bin/python bench/score_speed.py --checkpoint runs/ptb-small/best.pt
    .venv/bin/python bench/score_speed.py --sweep                           # batch budgets, direct only
    .venv/bin/python bench/score_speed.py --json                            # one JSON line
    .venv/bin/python bench/score_speed.py --checkpoint runs/ptb-small/best.pt --agreement   # see below
    .venv/bin/python bench/score_speed.py --checkpoint runs/ptb-small/best.pt --precision-agreement

Direct: `model.inference.score_sentences` over all the sentences in one call (sorted by length and
batched by a padded-token budget), and over the same 100-sentence groups the HTTP run sends.
HTTP: `POST /v1/score` to uvicorn in a subprocess (a real socket, JSON both ways), one request of
100 sentences after the other, and all of them in one request. Tokens count the words and each sentence's `<eos>`.
The direct runs are timed in fp32 and, where the CPU has bf16, in bf16 too (`precision="bf16"`),
alongside an fp32 and a bf16 `torch.mm` peak.

The runs take turns (direct, grouped, HTTP, one big request, again) and each keeps its best time.
`--agreement` instead compares, over the whole PTB test set, the sentence-by-sentence perplexity
(what /v1/score aggregates) with the seed's corpus evaluation (one stream, the state carried across
sentences, the first word not predicted); tests/inference/test_corpus_agreement.py shows the two
agree exactly once the corpus run resets its state at every `<eos>`. `--precision-agreement` scores
the whole PTB test set in fp32 and in bf16 and reports the per-token log-probability differences
(max and mean absolute) and both corpus perplexities.

Reports tokens/s, the achieved GFLOP/s (forward FLOPs per token 2 * (sum_l 4H(2H) + H*V), 5.28 M for
small over PTB's 10,000 words), the fraction of a `torch.mm` peak measured here with the same
threads, and HTTP time / direct time. Run it on an otherwise idle machine: another process on the
cores makes every number (the peak included) noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import torch
from serving import (
    JOB_ID,
    PTB_DIR,
    checkpoint_file,
    load_served,
    matmul_peak_gflops,
    prepare_service,
    serve,
)

from model.data import EOS
from model.inference import score_sentences
from model.network import supports_precision

PEAK_N = 2048  # the matmul peak: n x n x n fp32 products


def interleaved_best(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over `repeats` rounds, the runs taking turns within a round.

    Taking turns keeps the comparison fair on a machine whose speed drifts (shared virtual CPUs).
    """
    for fn in runs.values():  # warm-up: thread pools, the server's model cache
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@torch.inference_mode()
def agreement(args: argparse.Namespace) -> dict[str, Any]:
    """Sentence-by-sentence perplexity of the PTB test set against the state-carrying corpus run."""
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab, _ = load_served(checkpoint_file(args.checkpoint, args.data, Path(tmp)))
    lines = (args.data / "ptb.test.txt").read_text().splitlines()
    scores = score_sentences(model, vocab, [line.split() for line in lines])
    total = math.fsum(s.total_logprob for s in scores)
    count = sum(s.num_tokens for s in scores)
    stream = torch.tensor([vocab.id_of(t) for line in lines for t in [*line.split(), EOS]])
    state, carried = model.zero_state(1), 0.0
    for start in range(0, stream.numel() - 1, 1024):  # the seed's B = 1, T = 1 run, 1,024 tokens at a time
        x, y = stream[start : start + 1024], stream[start + 1 : start + 1025]
        logits, state = model(x[: y.numel()].unsqueeze(0), state)
        carried += torch.log_softmax(logits[0].double(), dim=-1).gather(1, y.unsqueeze(1)).sum().item()
    return {
        "checkpoint": str(args.checkpoint) if args.checkpoint else "small preset, random weights",
        "sentences": len(lines),
        "sentence_by_sentence": {
            "tokens": count,
            "corpus_perplexity": round(math.exp(-total / count), 3),
            "mean_sentence_perplexity": round(math.fsum(s.perplexity for s in scores) / len(scores), 3),
        },
        "corpus_run_state_carried": {
            "tokens": stream.numel() - 1,
            "perplexity": round(math.exp(-carried / (stream.numel() - 1)), 3),
        },
    }


@torch.inference_mode()
def precision_agreement(args: argparse.Namespace) -> dict[str, Any]:
    """Per-token log p of the whole PTB test set in bf16 against fp32, and both corpus perplexities."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, vocab, _ = load_served(checkpoint_file(args.checkpoint, args.data, Path(tmp)))
    sentences = [line.split() for line in (args.data / "ptb.test.txt").read_text().splitlines()]
    result: dict[str, Any] = {
        "checkpoint": str(args.checkpoint) if args.checkpoint else "small preset, random weights",
        "sentences": len(sentences),
    }
    per_precision = {p: score_sentences(model, vocab, sentences, precision=p) for p in ("fp32", "bf16")}
    full = [lp for s in per_precision["fp32"] for lp in s.logprobs]
    low = [lp for s in per_precision["bf16"] for lp in s.logprobs]
    diffs = sorted(abs(a - b) for a, b in zip(full, low, strict=True))
    result["tokens"] = len(full)
    for name, values in (("fp32", full), ("bf16", low)):
        result[f"corpus_perplexity_{name}"] = round(math.exp(-math.fsum(values) / len(values)), 4)
    result["logprob_abs_diff"] = {
        "max": round(diffs[-1], 5),
        "p99.9": round(diffs[int(0.999 * (len(diffs) - 1))], 5),
        "p99": round(diffs[int(0.99 * (len(diffs) - 1))], 5),
        "mean": round(math.fsum(diffs) / len(diffs), 6),
    }
    sentence_diffs = [
        abs(a.total_logprob - b.total_logprob)
        for a, b in zip(per_precision["fp32"], per_precision["bf16"], strict=True)
    ]
    result["sentence_total_logprob_abs_diff_max"] = round(max(sentence_diffs), 5)
    result["corpus_perplexity_rel_diff"] = round(
        result["corpus_perplexity_bf16"] / result["corpus_perplexity_fp32"] - 1, 6
    )
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = (args.data / "ptb.test.txt").read_text().splitlines()[: args.sentences]
    sentences = [line.split() for line in lines]
    tokens = sum(len(s) + 1 for s in sentences)
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint_file(args.checkpoint, args.data, Path(tmp))
        model, vocab, config = load_served(path)
        flops = config.forward_flops_per_token(len(vocab))
        peak = matmul_peak_gflops(PEAK_N)
        result: dict[str, Any] = {
            "checkpoint": str(args.checkpoint) if args.checkpoint else "small preset, random weights",
            "threads": torch.get_num_threads(),
            "sentences": len(sentences),
            "tokens": tokens,
            "forward_mflop_per_token": round(flops / 1e6, 3),
        }

        def rate(seconds: float) -> dict[str, float]:
            gflops = tokens * flops / seconds / 1e9
            return {
                "seconds": round(seconds, 4),
                "tokens_per_s": round(tokens / seconds, 1),
                "gflops": round(gflops, 2),
                "fraction_of_peak": round(gflops / peak, 4),
            }

        if args.sweep:
            budgets = {
                f"direct_batch_tokens_{budget}": lambda b=budget: score_sentences(
                    model, vocab, sentences, batch_tokens=b
                )
                for budget in (1024, 2048, 4096, 8192, 16384, 32768)
            }
            result.update({name: rate(t) for name, t in interleaved_best(budgets, args.repeats).items()})
        groups = [sentences[i : i + args.request_size] for i in range(0, len(sentences), args.request_size)]
        # The peak is timed in every round too: the speed of these shared virtual CPUs drifts.
        a, b, out = torch.randn(PEAK_N, PEAK_N), torch.randn(PEAK_N, PEAK_N), torch.empty(PEAK_N, PEAK_N)
        runs: dict[str, Callable[[], object]] = {
            "matmul_peak": lambda: torch.mm(a, b, out=out),
            "direct": lambda: score_sentences(model, vocab, sentences),
            "direct_in_requests": lambda: [score_sentences(model, vocab, g) for g in groups],
        }
        bf16 = supports_precision(torch.device("cpu"), "bf16")
        if bf16:
            a16, b16, out16 = a.bfloat16(), b.bfloat16(), out.bfloat16()
            runs["matmul_peak_bf16"] = lambda: torch.mm(a16, b16, out=out16)
            runs["direct_bf16"] = lambda: score_sentences(model, vocab, sentences, precision="bf16")
            runs["direct_in_requests_bf16"] = lambda: [
                score_sentences(model, vocab, g, precision="bf16") for g in groups
            ]
        with ExitStack() as stack:
            if not args.no_http:
                data_dir = Path(tmp) / "data"
                prepare_service(data_dir, path)
                limits = {"max_sentences": max(args.request_size, len(sentences)), "max_request_tokens": 10**7}
                url = stack.enter_context(serve(data_dir, args.threads, **limits))
                client = stack.enter_context(httpx.Client(base_url=url, timeout=600))
                bodies = [{"model": JOB_ID, "sentences": [" ".join(s) for s in g]} for g in groups]
                everything = {"model": JOB_ID, "sentences": lines}

                def over_http(requests: list[dict[str, Any]]) -> None:
                    for body in requests:
                        client.post("/v1/score", json=body).raise_for_status()

                runs["http"] = lambda: over_http(bodies)
                runs["http_one_request"] = lambda: over_http([everything])
            times = interleaved_best(runs, args.repeats)
        peak = max(peak, matmul_peak_gflops(PEAK_N), 2 * PEAK_N**3 / times.pop("matmul_peak") / 1e9)
        if bf16:
            result["matmul_peak_bf16_gflops"] = round(2 * PEAK_N**3 / times.pop("matmul_peak_bf16") / 1e9, 1)
        result.update({name: rate(t) for name, t in times.items()})
        if bf16:
            result["bf16_speedup"] = round(times["direct"] / times["direct_bf16"], 3)
            result["bf16_speedup_in_requests"] = round(
                times["direct_in_requests"] / times["direct_in_requests_bf16"], 3
            )
        if "http" in times:
            result["http_over_direct"] = round(times["http"] / times["direct"], 3)
            result["http_over_direct_in_requests"] = round(times["http"] / times["direct_in_requests"], 3)
            result["http_one_request_over_direct"] = round(times["http_one_request"] / times["direct"], 3)
        result["matmul_peak_gflops"] = round(max(peak, matmul_peak_gflops(PEAK_N)), 1)
        for key in [k for k in result if isinstance(result[k], dict)]:  # against the higher peak
            result[key]["fraction_of_peak"] = round(result[key]["gflops"] / result["matmul_peak_gflops"], 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint file (default: small preset, random weights)")
    parser.add_argument("--data", type=Path, default=PTB_DIR, help="the PTB folder")
    parser.add_argument("--sentences", type=int, default=1000, help="PTB test sentences to score")
    parser.add_argument("--request-size", type=int, default=100, help="sentences per HTTP request")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sweep", action="store_true", help="also time several batch budgets (direct)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP run")
    parser.add_argument("--agreement", action="store_true", help="sentence-by-sentence vs corpus perplexity")
    parser.add_argument("--precision-agreement", action="store_true", help="bf16 against fp32 on the PTB test set")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    if args.precision_agreement:
        print(json.dumps(precision_agreement(args), indent=None if args.json else 2))
        return 0
    if args.agreement:
        print(json.dumps(agreement(args), indent=None if args.json else 2))
        return 0
    r = run(args)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['checkpoint']}: {r['sentences']} PTB test sentences, {r['tokens']} tokens, {r['threads']} threads")
    print(f"forward MFLOP/token {r['forward_mflop_per_token']}, matmul peak {r['matmul_peak_gflops']} GFLOP/s")
    print(f"{'path':28} {'seconds':>8} {'tokens/s':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for key, value in r.items():
        if isinstance(value, dict):
            print(
                f"{key:28} {value['seconds']:8.3f} {value['tokens_per_s']:10.0f} {value['gflops']:8.1f} "
                f"{value['fraction_of_peak']:8.1%}"
            )
    if "bf16_speedup" in r:
        print(
            f"bf16 / fp32 speed: {r['bf16_speedup']:.2f}x in one call, {r['bf16_speedup_in_requests']:.2f}x in "
            f"{args.request_size}-sentence calls; bf16 matmul peak {r['matmul_peak_bf16_gflops']} GFLOP/s"
        )
    if "http_over_direct" in r:
        grouped, one = r["http_over_direct_in_requests"], r["http_one_request_over_direct"]
        print(
            f"HTTP / direct: {r['http_over_direct']:.2f}x (against the same {args.request_size}-sentence groups: "
            f"{grouped:.2f}x); all sentences in one request: {one:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
