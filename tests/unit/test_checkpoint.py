"""model.checkpoint: the payload round trip, safe loading (weights_only) and its errors, and resume
after an epoch or after a mid-epoch stop reproducing an uninterrupted run bit for bit on the CPU
(with dropout on, so the saved random state matters, and a decaying lr, so the schedule matters)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from model import checkpoint
from model.config import ModelConfig, preset
from model.data import Corpus
from model.tokenizers import Tokenizer, train_subword
from model.train import Callbacks, EpochResult, StepProgress, Trainer

CorpusWriter = Callable[..., Path]  # the `write_corpus` fixture of conftest.py


@pytest.fixture
def resume_config() -> ModelConfig:
    # keep_prob < 1: dropout masks depend on the RNG; max_epoch 1: lr 1, 0.5, 0.25 over the 3 epochs.
    return preset("test", hidden_size=8, num_layers=2, keep_prob=0.5, max_max_epoch=3, device="cpu")


class StopAt(Callbacks):
    """Stops after `steps` training steps in all, or right after epoch `epoch`, saving a checkpoint there."""

    def __init__(self, path: Path, steps: int | None = None, epoch: int | None = None) -> None:
        self.path, self.steps, self.epoch = path, steps, epoch
        self.done = 0
        self.stop = False

    def on_step(self, progress: StepProgress) -> None:
        self.done += 1

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        if result.epoch == self.epoch:
            checkpoint.save(checkpoint.trainer_payload(trainer), self.path)
            self.stop = True

    def should_stop(self) -> bool:
        return self.stop or (self.steps is not None and self.done >= self.steps)


def comparable(trainer: Trainer) -> dict[str, Any]:
    """What must match between runs: everything but the wall-clock fields (seconds, wps)."""
    s = trainer.state
    return {
        "history": [{k: h[k] for k in ("epoch", "lr", "train_ppl", "valid_ppl")} for h in s.history],
        "best_valid_ppl": s.best_valid_ppl,
        "test_ppl": s.test_ppl,
        "epoch": s.epoch,
        "step": s.step,
    }


def assert_bitwise_equal_weights(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.fixture
def uninterrupted(corpus: Corpus, resume_config: ModelConfig) -> Trainer:
    trainer = Trainer(resume_config, corpus)
    assert trainer.fit() is True
    return trainer


def resume_and_finish(path: Path, corpus_dir: Path) -> Trainer:
    torch.rand(1000)  # disturb the global RNG: the checkpoint must restore it
    trainer = checkpoint.resume_trainer(checkpoint.load(path), Corpus.load(corpus_dir))
    assert trainer.fit() is True
    return trainer


@pytest.mark.parametrize("epoch", [1, 2])
def test_resume_after_epoch_equals_uninterrupted(
    uninterrupted: Trainer, corpus: Corpus, corpus_dir: Path, resume_config: ModelConfig, tmp_path: Path, epoch: int
) -> None:
    path = tmp_path / f"epoch-{epoch}.pt"
    first = Trainer(resume_config, corpus)
    assert first.fit(StopAt(path, epoch=epoch)) is False
    resumed = resume_and_finish(path, corpus_dir)
    assert [h["lr"] for h in resumed.state.history] == [1.0, 0.5, 0.25]  # the schedule went on, not restarted
    assert comparable(resumed) == comparable(uninterrupted)
    assert_bitwise_equal_weights(resumed, uninterrupted)


@pytest.mark.parametrize(("epoch", "offset"), [(0, 30), (1, 20)])  # stop inside epoch 1, inside epoch 2
def test_resume_after_mid_epoch_stop_equals_uninterrupted(
    uninterrupted: Trainer,
    corpus: Corpus,
    corpus_dir: Path,
    resume_config: ModelConfig,
    tmp_path: Path,
    epoch: int,
    offset: int,
) -> None:
    steps = epoch * uninterrupted.train_steps + offset
    first = Trainer(resume_config, corpus)
    assert first.fit(StopAt(tmp_path / "unused.pt", steps=steps)) is False
    assert (first.state.epoch, first.state.step) == (epoch, offset)
    payload = checkpoint.trainer_payload(first)
    assert payload["train_state"]["carried_h"].shape == (2, 20, 8)  # the LSTM state flows on
    path = checkpoint.save(payload, tmp_path / "mid.pt")
    resumed = resume_and_finish(path, corpus_dir)
    assert comparable(resumed) == comparable(uninterrupted)
    assert_bitwise_equal_weights(resumed, uninterrupted)


def test_round_trip_gives_identical_logits(corpus: Corpus, tiny_config: ModelConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config.replace(max_steps_per_epoch=5), corpus)
    trainer.fit()
    path = checkpoint.save(checkpoint.trainer_payload(trainer), tmp_path / "sub" / "model.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary file left behind
    model, vocab, config = checkpoint.load_model(checkpoint.load(path), device="cpu")
    assert not model.training
    assert vocab == corpus.vocab
    assert config == trainer.config
    x = corpus.test[:24].view(2, 12)
    with torch.no_grad():
        expected, _ = trainer.model.eval()(x, trainer.model.zero_state(2))
        got, _ = model(x, model.zero_state(2))
    assert torch.equal(got, expected)


def test_file_loads_with_plain_torch_weights_only(corpus: Corpus, tiny_config: ModelConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config, corpus)
    path = checkpoint.save(checkpoint.trainer_payload(trainer), tmp_path / "c.pt")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(payload) == {"format", "tokenizer", "config", "vocab", "model", "train_state", "rng"}
    assert payload["tokenizer"] == {"kind": "ptb", "lowercase": True, "min_count": 1}  # PTB-form text
    assert payload["format"] == checkpoint.FORMAT
    assert payload["vocab"] == list(corpus.vocab.words)
    assert ModelConfig.from_dict(payload["config"]) == tiny_config
    assert payload["model"]["embedding.weight"].shape == (len(corpus.vocab), 8)
    assert payload["train_state"]["epoch"] == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "nope.pt")


def test_truncated_and_corrupt_files(corpus: Corpus, tiny_config: ModelConfig, tmp_path: Path) -> None:
    good = checkpoint.save(checkpoint.trainer_payload(Trainer(tiny_config, corpus)), tmp_path / "good.pt")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a zip file" * 10)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(path)
    assert issubclass(checkpoint.CheckpointError, ValueError)


def test_foreign_and_unsafe_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(checkpoint.CheckpointError, match="not a"):
        checkpoint.load(foreign)
    # A pickled object is refused by weights_only loading, so no code from the file runs.
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": checkpoint.FORMAT, "config": preset("test")}, unsafe)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(unsafe)


def test_resume_on_another_corpus_is_refused(
    corpus: Corpus, tiny_config: ModelConfig, write_corpus: CorpusWriter, tmp_path: Path
) -> None:
    payload = checkpoint.trainer_payload(Trainer(tiny_config, corpus))
    other = Corpus.load(write_corpus(train=["x y z"] * 50, valid=["x y"] * 30, test=["z"] * 5))
    with pytest.raises(checkpoint.CheckpointError, match="vocabulary"):
        checkpoint.resume_trainer(payload, other)


def test_the_tokenizer_travels_with_the_checkpoint(corpus: Corpus, tiny_config: ModelConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config, corpus)
    lines = ["The cat sat on the mat.", "A big dog ran fast!"] * 20
    tokenizer = train_subword("bpe", lines, vocab_size=300)
    path = checkpoint.save(checkpoint.trainer_payload(trainer, tokenizer), tmp_path / "c.pt")
    loaded = checkpoint.tokenizer_of(checkpoint.load(path))
    assert loaded == tokenizer
    assert loaded.tokens("The dog sat.") == tokenizer.tokens("The dog sat.")
    path = checkpoint.save(checkpoint.trainer_payload(trainer, Tokenizer("wikitext", min_count=2)), tmp_path / "w.pt")
    assert checkpoint.tokenizer_of(checkpoint.load(path)) == Tokenizer("wikitext", min_count=2)


@pytest.mark.parametrize(("convention", "kind"), [("wikitext", "wikitext"), ("ptb", "ptb"), ("plain", "whitespace")])
def test_format_1_files_still_load_with_their_text_convention(
    corpus: Corpus, tiny_config: ModelConfig, tmp_path: Path, convention: str, kind: str
) -> None:
    # A format-1 file: no tokenizer, a text convention (the first ones had none: next test).
    old = checkpoint.trainer_payload(Trainer(tiny_config, corpus))
    del old["tokenizer"]
    old["format"] = "lstm-lm-checkpoint/1"
    old["text_convention"] = convention
    old["config"]["vocab_size"] = 10_000  # older configs always had a cap
    path = checkpoint.save(old, tmp_path / "old.pt")
    payload = checkpoint.load(path)
    assert checkpoint.tokenizer_of(payload) == Tokenizer(kind)
    _, vocab, config = checkpoint.load_model(payload, device="cpu")
    assert vocab == corpus.vocab and config.vocab_size == 10_000


def test_a_format_1_file_without_a_convention_is_read_by_its_vocabulary(
    corpus: Corpus, tiny_config: ModelConfig
) -> None:
    old = checkpoint.trainer_payload(Trainer(tiny_config, corpus))
    del old["tokenizer"]
    old["vocab"] = ["<eos>", "<unk>", "the", "N", "company", "'s"]  # PTB's text: N, lower case
    assert checkpoint.tokenizer_of(old) == Tokenizer("ptb")
