"""Command line: `python -m model train|score|generate`.

python -m model train --preset small --data ../shared/data/ptb --out runs/small
python -m model train --resume runs/small/last.pt --data ../shared/data/ptb
python -m model score --checkpoint runs/small/best.pt "the company said <unk> N"
python -m model generate --checkpoint runs/small/best.pt --prompt "the market" --max-tokens 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from model import checkpoint
from model.config import FIELD_NAMES, PRESETS, ConfigError, ModelConfig, preset
from model.data import Corpus, CorpusError
from model.distributed import Ranks
from model.inference import INFERENCE_PRECISIONS, generate, score_sentences
from model.train import Callbacks, EpochResult, StepProgress, Trainer, perplexity


def parse_override(text: str) -> tuple[str, Any]:
    """`field=value` with the value read as JSON when it parses (numbers, null), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or name not in FIELD_NAMES:
        raise argparse.ArgumentTypeError(f"expected field=value with field one of {', '.join(sorted(FIELD_NAMES))}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


class ProgressBar:
    """A one-line bar on a terminal; silent when the stream is not one."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.enabled = stream.isatty()

    def update(self, p: StepProgress) -> None:
        if not self.enabled:
            return
        done = int(self.width * p.fraction)
        bar = "#" * done + "-" * (self.width - done)
        self.stream.write(
            f"\repoch {p.epoch} [{bar}] {p.step}/{p.steps} ppl {p.ppl:8.2f} {p.wps:6.0f} wps lr {p.lr:.3g}"
        )
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.width + 70) + "\r")
            self.stream.flush()


class ConsoleCallbacks(Callbacks):
    """Prints the seed's lines, keeps a progress bar, writes a checkpoint after every epoch."""

    def __init__(self, out: Path | None, every_epoch: bool = True) -> None:
        self.out, self.every_epoch = out, every_epoch
        self.bar = ProgressBar()
        self.last_epoch = 0

    def on_step(self, progress: StepProgress) -> None:
        if progress.epoch != self.last_epoch:
            self.last_epoch = progress.epoch
            self.bar.clear()
            print(f"Epoch: {progress.epoch} Learning rate: {progress.lr:.3f}", flush=True)
        self.bar.update(progress)

    def on_log(self, p: StepProgress) -> None:
        self.bar.clear()
        print(f"{p.fraction:.3f} perplexity: {p.ppl:.3f} speed: {p.wps:.0f} wps", flush=True)

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        self.bar.clear()
        print(f"Epoch: {result.epoch} Train Perplexity: {result.train_ppl:.3f}")
        print(f"Epoch: {result.epoch} Valid Perplexity: {result.valid_ppl:.3f}")
        print(f"Epoch: {result.epoch} took {result.seconds:.1f} s at {result.wps:.0f} wps", flush=True)
        if self.out is not None:
            payload = checkpoint.trainer_payload(trainer, trainer.corpus.tokenizer)
            path = checkpoint.save(payload, self.out / "last.pt")
            if self.every_epoch:
                path = checkpoint.save(payload, self.out / f"epoch-{result.epoch:03d}.pt")
            if trainer.state.best_valid_ppl == result.valid_ppl:
                checkpoint.save(payload, self.out / "best.pt")
            print(f"saved {path}", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    overrides = dict(args.set or [])
    if args.resume:
        payload = checkpoint.load(args.resume)
        config = ModelConfig.from_dict(payload["config"])
        corpus = Corpus.load(args.data, config.vocab_size)
        trainer = checkpoint.resume_trainer(payload, corpus, args.device)
        print(f"resumed {args.resume} at epoch {trainer.state.epoch} step {trainer.state.step}", flush=True)
    else:
        config = preset(args.preset, **overrides)
        if args.device:
            config = config.replace(device=args.device)
        corpus = Corpus.load(args.data, config.vocab_size)
        trainer = Trainer(config, corpus)
    c = trainer.config
    print(f"config: {json.dumps(c.to_dict())}")
    print(
        f"vocabulary {len(corpus.vocab)} words; tokens train {corpus.train.numel()} valid {corpus.valid.numel()} "
        f"test {corpus.test.numel()}; {trainer.train_steps} steps per epoch on {trainer.device}",
        flush=True,
    )
    started = time.perf_counter()
    callbacks = ConsoleCallbacks(Path(args.out) if args.out else None, every_epoch=args.epoch_checkpoints)
    if trainer.distributed:  # this process is rank 0; the others live for the fit
        with Ranks(c, corpus, args.resume):
            trainer.fit(callbacks)
    else:
        trainer.fit(callbacks)
    print(f"Test Perplexity: {trainer.state.test_ppl:.3f}")
    print(f"wall time {time.perf_counter() - started:.1f} s", flush=True)
    if args.out:
        checkpoint.save(checkpoint.trainer_payload(trainer, trainer.corpus.tokenizer), Path(args.out) / "last.pt")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    model, vocab, _ = checkpoint.load_model(checkpoint.load(args.checkpoint), args.device or "auto")
    sentences = args.sentences or [line for line in sys.stdin.read().splitlines() if line.strip()]
    words = [s.split() for s in sentences]
    scores = score_sentences(model, vocab, words, score_eos=not args.no_eos, precision=args.precision)
    total_lp = sum(s.total_logprob for s in scores)
    total_n = sum(s.num_tokens for s in scores)
    for sentence, score in zip(sentences, scores, strict=True):
        print(f"{score.perplexity:10.3f}  {sentence}")
    if total_n:
        print(f"corpus perplexity {perplexity(-total_lp, total_n):.3f} over {total_n} tokens")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    model, vocab, _ = checkpoint.load_model(checkpoint.load(args.checkpoint), args.device or "auto")
    results = generate(
        model,
        vocab,
        args.prompt.split(),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        n=args.n,
        precision=args.precision,
    )
    for result in results:
        print(" ".join(result.tokens))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="Word-level LSTM language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a preset on a corpus folder")
    train.add_argument("--preset", choices=sorted(PRESETS), default="small")
    train.add_argument("--data", required=True, help="folder with train/valid/test text files")
    train.add_argument("--set", action="append", type=parse_override, metavar="FIELD=VALUE", help="override a field")
    train.add_argument("--out", help="folder for checkpoints (one per epoch, last.pt, best.pt)")
    train.add_argument(
        "--epoch-checkpoints",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep a checkpoint of every epoch besides last.pt and best.pt (default: yes)",
    )
    train.add_argument("--resume", help="continue from this checkpoint")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.set_defaults(func=cmd_train)

    score = sub.add_parser("score", help="perplexity of sentences (arguments or stdin lines)")
    score.add_argument("--checkpoint", required=True)
    score.add_argument("--no-eos", action="store_true", help="do not score the end-of-sentence token")
    score.add_argument("--device", choices=["auto", "cpu", "cuda"])
    score.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32")
    score.add_argument("sentences", nargs="*")
    score.set_defaults(func=cmd_score)

    gen = sub.add_parser("generate", help="continue a prompt")
    gen.add_argument("--checkpoint", required=True)
    gen.add_argument("--prompt", default="")
    gen.add_argument("--max-tokens", type=int, default=30)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("-n", type=int, default=1)
    gen.add_argument("--device", choices=["auto", "cpu", "cuda"])
    gen.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="fp32")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, CorpusError, checkpoint.CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
