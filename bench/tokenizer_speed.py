"""What tokenizing an upload costs: time and peak memory of each tokenizer on a large raw-English
corpus (a subword model trained first for bpe and unigram), and `/healthz` latency while the service
does it for a real upload.

The corpus is Debian's license texts (raw English with case and punctuation), their lines shuffled
and repeated to `--megabytes` MB (9 in 10 lines train, the rest valid and test). Each tokenizer runs
`app.training.datasets.tokenize_corpus` alone in a fresh process, as an upload's child process does;
its time is the wall clock and its memory the process' peak resident set. Then `python -m app run`
(the API and one worker) on loopback takes the same corpus as a `bpe` upload while `/healthz` is
asked every 20 ms. Nothing is asserted; a Markdown report is printed (and written to `--out`).

    .venv/bin/python bench/tokenizer_speed.py --megabytes 60 --out docs/results/tokenizer-speed.md
    .venv/bin/python bench/tokenizer_speed.py --megabytes 5 --kinds whitespace,bpe   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from load import Service, healthz_while, ms

REPO = Path(__file__).resolve().parents[1]
LICENSES = Path("/usr/share/common-licenses")
KINDS = ("whitespace", "ptb", "wikitext", "bpe", "unigram")

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from app.training.datasets import TokenizerChoice, tokenize_corpus
start = time.perf_counter()
stats = tokenize_corpus({sources!r}, {out!r}, TokenizerChoice({kind!r}), {sentences})
seconds = time.perf_counter() - start
print(json.dumps({{
    "seconds": seconds,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "vocab_size": stats.vocab_size,
    "tokens": stats.splits["train"].tokens,
    "words": stats.splits["train"].words,
    "test_unk_rate": stats.splits["test"].report()["unk_rate"],
}}))
"""


def write_corpus(folder: Path, megabytes: float, seed: int = 0) -> dict[str, Path]:
    """Shuffled license lines repeated to about `megabytes` MB; returns the split files."""
    lines = [
        line.strip()
        for path in sorted(LICENSES.iterdir())
        if path.is_file() and not path.is_symlink()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {split: (folder / f"{split}.txt").open("w", encoding="utf-8") for split in ("train", "valid", "test")}
    written, target = 0, int(megabytes * 1024 * 1024)
    while written < target:
        rng.shuffle(lines)
        for i, line in enumerate(lines):
            split = "train" if i % 10 < 8 else "valid" if i % 10 == 8 else "test"
            files[split].write(line + "\n")
            written += len(line.encode()) + 1
            if written >= target:
                break
    for f in files.values():
        f.close()
    return {split: folder / f"{split}.txt" for split in files}


def tokenize_alone(kind: str, sources: dict[str, Path], out: Path, sentences: int) -> dict[str, float]:
    code = CHILD.format(
        repo=str(REPO), sources={k: str(v) for k, v in sources.items()}, out=str(out), kind=kind, sentences=sentences
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=60, help="size of the corpus, all splits together")
    parser.add_argument("--kinds", default=",".join(KINDS), help="tokenizers to time, comma-separated")
    parser.add_argument("--sentences", type=int, default=300_000, help="lines a subword model is trained on")
    parser.add_argument("--no-service", action="store_true", help="skip the upload through the service")
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    if not LICENSES.is_dir():
        print(f"no license texts at {LICENSES} (Debian's base-files)", file=sys.stderr)
        return 2

    report = [
        f"# Tokenizer cost ({args.megabytes:g} MB upload)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}.",
        f"Command: `.venv/bin/python bench/tokenizer_speed.py --megabytes {args.megabytes:g} "
        f"--sentences {args.sentences}`",
        "",
        "| tokenizer | seconds | MB/s | peak memory (MB) | vocabulary | train tokens per word | test <unk> rate |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="tokenizer-bench-") as tmp:
        root = Path(tmp)
        sources = write_corpus(root / "corpus", args.megabytes)
        size_mb = sum(p.stat().st_size for p in sources.values()) / 1024 / 1024
        for kind in [k for k in args.kinds.split(",") if k]:
            result = tokenize_alone(kind, sources, root / f"tokens-{kind}", args.sentences)
            line = (
                f"| {kind} | {result['seconds']:.1f} | {size_mb / result['seconds']:.1f} | "
                f"{result['peak_rss_mb']:.0f} | {int(result['vocab_size']):,} | "
                f"{result['tokens'] / result['words']:.2f} | {result['test_unk_rate']:.4f} |"
            )
            report.append(line)
            print(line, flush=True)

        if not args.no_service:
            service = Service(root / "data")
            try:
                idle = healthz_while(service, None, count=200, interval=0.01)
                outcome: dict[str, object] = {}

                def upload() -> None:
                    start = time.perf_counter()
                    files = {s: (f"{s}.txt", sources[s].open("rb")) for s in ("train", "valid", "test")}
                    response = service.client.post("/v1/datasets", files=files, data={"tokenizer": "bpe"})
                    outcome["status"], outcome["seconds"] = response.status_code, time.perf_counter() - start
                    outcome["vocab"] = response.json().get("vocab_size")

                uploader = threading.Thread(target=upload)
                uploader.start()
                during = healthz_while(service, uploader, count=10, interval=0.02)
                uploader.join()
            finally:
                service.stop()
            report += [
                "",
                f"## `/healthz` while `python -m app run` takes it as a `bpe` upload ({size_mb:.1f} MB)",
                "",
                f"The upload answered {outcome['status']} after {outcome['seconds']:.1f} s "
                f"(vocabulary {outcome['vocab']}).",
                "",
                "| | requests | p50 / p99 / max (ms) |",
                "|---|---|---|",
                f"| idle | {len(idle)} | {ms(idle)} |",
                f"| during the upload | {len(during)} | {ms(during)} |",
            ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
