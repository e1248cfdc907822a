"""Shared fixtures for the fast unit tests: tiny corpora written into tmp_path and tiny models.

Everything here runs real torch on the CPU with one thread: the models are so small that more
threads only add overhead, and the machine has two cores shared with other work.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from model.config import ModelConfig, preset
from model.data import Corpus
from model.network import LSTMLanguageModel

torch.set_num_threads(1)

# A small grammar-ish vocabulary, so that a few training steps lower the perplexity.
WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "big", "red", "N")

CorpusWriter = Callable[..., Path]


def sentence_lines(num_lines: int, seed: int, words: Sequence[str] = WORDS) -> list[str]:
    """Deterministic pseudo-random lines of 3-8 words drawn from `words`."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(num_lines)]


def write_split_files(
    directory: Path,
    train: Sequence[str],
    valid: Sequence[str],
    test: Sequence[str],
    prefix: str = "ptb.",
) -> Path:
    """Write `<prefix>{train,valid,test}.txt` (one line per item, PTB's leading/trailing spaces)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        text = "".join(f" {line} \n" for line in lines)
        (directory / f"{prefix}{split}.txt").write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def write_corpus(tmp_path: Path) -> CorpusWriter:
    """A function writing a corpus folder under tmp_path; defaults give a few thousand tokens."""
    counter = iter(range(1_000_000))

    def write(
        train: Sequence[str] | None = None,
        valid: Sequence[str] | None = None,
        test: Sequence[str] | None = None,
        prefix: str = "ptb.",
        name: str | None = None,
    ) -> Path:
        directory = tmp_path / (name or f"corpus{next(counter)}")
        return write_split_files(
            directory,
            train if train is not None else sentence_lines(400, seed=1),
            valid if valid is not None else sentence_lines(60, seed=2),
            test if test is not None else sentence_lines(30, seed=3),
            prefix,
        )

    return write


@pytest.fixture
def corpus_dir(write_corpus: CorpusWriter) -> Path:
    """The default tiny corpus: ~2,600 train, ~400 valid, ~200 test tokens, 14 types."""
    return write_corpus()


@pytest.fixture
def corpus(corpus_dir: Path) -> Corpus:
    return Corpus.load(corpus_dir)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """Tiny shapes on the CPU with no dropout, so training steps can be recomputed by hand."""
    return preset(
        "test", hidden_size=8, num_layers=2, num_steps=3, batch_size=4, max_max_epoch=1, max_epoch=1, device="cpu"
    )


@pytest.fixture
def tiny_model(corpus: Corpus) -> LSTMLanguageModel:
    """An untrained 2-layer H=8 model over the default corpus' vocabulary, in eval mode."""
    torch.manual_seed(0)
    config = preset("test", hidden_size=8, num_layers=2, init_scale=0.5, device="cpu")
    return LSTMLanguageModel(config, len(corpus.vocab)).eval()
