"""model.distributed: one run on two real processes (gloo on the CPU). Without dropout it gives the
numbers and weights of one process (up to the order of the float additions), and a run stopped
mid-epoch resumes on one process (or two: each rank takes its streams' carried state); with dropout
each rank draws its own masks, a rank that dies stops rank 0 with `RankFailed`, and the run resumes
from its last checkpoint to exactly the steps the dead run had taken after it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch

from model import checkpoint
from model.config import ConfigError, ModelConfig
from model.data import Corpus, Vocabulary
from model.distributed import RankFailed, Ranks
from model.train import Callbacks, EpochResult, StepProgress, Trainer, perplexity

# The small preset's shape (2 layers, no dropout, lr 1 decayed after max_epoch, clip 5), tiny.
CONFIG = ModelConfig(
    num_layers=2,
    hidden_size=16,
    num_steps=5,
    batch_size=4,
    max_epoch=1,
    max_max_epoch=2,
    max_steps_per_epoch=12,
    device="cpu",
)
TIMEOUT = timedelta(seconds=60)  # a broken test fails instead of waiting ten minutes


def tiny_corpus() -> Corpus:
    generator = torch.Generator().manual_seed(1)
    vocab = Vocabulary(("<eos>", "<unk>", *(f"w{i}" for i in range(38))))

    def stream(n: int) -> torch.Tensor:
        return torch.randint(0, len(vocab), (n,), generator=generator)

    return Corpus(vocab, stream(1200), stream(400), stream(120), {"train": 0, "valid": 0, "test": 0})


class Record(Callbacks):
    """Records the running perplexities and epoch results; stops after `stop_after` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.ppl: list[float] = []
        self.epochs: list[EpochResult] = []

    def on_step(self, progress: StepProgress) -> None:
        self.ppl.append(progress.ppl)

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        self.epochs.append(result)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.ppl) >= self.stop_after


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def assert_same_run(got: Trainer, want: Trainer, rtol: float = 1e-5) -> None:
    assert len(got.state.history) == len(want.state.history)
    for mine, theirs in zip(got.state.history, want.state.history, strict=True):
        for key in ("lr", "train_ppl", "valid_ppl"):
            assert relative(mine[key], theirs[key]) <= rtol, (key, mine, theirs)
    assert got.state.test_ppl is not None and want.state.test_ppl is not None
    assert relative(got.state.test_ppl, want.state.test_ppl) <= rtol
    for (name, mine), theirs in zip(got.model.state_dict().items(), want.model.state_dict().values(), strict=True):
        scale = max(float(theirs.abs().max()), 1e-12)
        assert float((mine - theirs).abs().max()) <= rtol * scale, name


def fit_on_two(config: ModelConfig, corpus: Corpus, callbacks: Callbacks, resume: Path | None = None) -> Trainer:
    """Rank 0 here, rank 1 in a process of its own; a fresh run or a resumed checkpoint."""
    if resume is None:
        trainer = Trainer(config, corpus)
    else:
        trainer = checkpoint.resume_trainer(checkpoint.load(resume), corpus, world_size=config.world_size)
    with Ranks(config, corpus, resume, timeout=TIMEOUT):
        trainer.fit(callbacks)
    return trainer


def test_a_batch_size_the_processes_cannot_share_is_refused() -> None:
    with pytest.raises(ConfigError, match="batch_size 20 is not divisible by world_size 3"):
        ModelConfig(world_size=3)
    with pytest.raises(ConfigError, match="world_size must be an integer in"):
        ModelConfig(world_size=65)


class SaveEpochs(Record):
    """Records, and writes a checkpoint of every epoch into `folder` (what the worker does)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        super().on_epoch(result, trainer)
        checkpoint.save(checkpoint.trainer_payload(trainer), self.folder / f"epoch{result.epoch}.pt")


def test_two_processes_train_as_one_and_their_checkpoint_resumes_on_one_or_two(tmp_path: Path) -> None:
    corpus = tiny_corpus()
    one = Trainer(CONFIG, corpus)
    single = Record()
    assert one.fit(single)

    stopped = Record(stop_after=17)  # mid-epoch 2, the lr decayed
    two = fit_on_two(CONFIG.replace(world_size=2), corpus, stopped)
    assert not two.finished and (two.state.epoch, two.state.step) == (1, 5)
    assert stopped.ppl == pytest.approx(single.ppl[:17], rel=1e-5)  # every step's running perplexity
    assert relative(stopped.epochs[0].valid_ppl, single.epochs[0].valid_ppl) <= 1e-5
    payload = checkpoint.trainer_payload(two)
    carried = payload["train_state"]["carried_h"]
    assert carried.shape == (2, 4, 16) and len(payload["ranks_rng"]) == 2  # every stream: one process' format
    path = checkpoint.save(payload, tmp_path / "stopped.pt")

    on_one = checkpoint.resume_trainer(checkpoint.load(path), corpus, world_size=1)
    assert on_one.fit(Callbacks())
    assert_same_run(on_one, one)  # epoch and test perplexities, weights
    rank_1 = checkpoint.resume_trainer(checkpoint.load(path), corpus, rank=1)  # its streams' state
    assert rank_1.carried is not None and torch.equal(rank_1.carried[0], carried[:, 2:])


class KillRankOne(SaveEpochs):
    """Kills rank 1 at the third step of epoch 2 (after the checkpoint of epoch 1)."""

    def __init__(self, folder: Path, ranks: Ranks) -> None:
        super().__init__(folder)
        self.ranks = ranks

    def on_step(self, progress: StepProgress) -> None:
        super().on_step(progress)
        if (progress.epoch, progress.step) == (2, 3):
            assert self.ranks.context is not None
            process = self.ranks.context.processes[0]
            process.kill()
            process.join()


def test_with_dropout_a_run_whose_rank_dies_resumes_from_its_checkpoint_exactly(tmp_path: Path) -> None:
    corpus = tiny_corpus()
    config = CONFIG.replace(keep_prob=0.5, world_size=2)
    broken = Trainer(config, corpus)
    ranks = Ranks(config, corpus, timeout=TIMEOUT)
    killed = KillRankOne(tmp_path, ranks)
    with pytest.raises(RankFailed, match="rank 1 exited with code -9"), ranks:
        broken.fit(killed)
    assert len(killed.ppl) == 12 + 3 and len(killed.epochs) == 1
    one = Trainer(config.replace(world_size=1), corpus)
    one.fit(Record(stop_after=12))
    assert killed.epochs[0].train_ppl != perplexity(one.state.epoch_costs, one.state.epoch_iters)  # own masks

    resumed = Record()
    fit_on_two(config, corpus, resumed, resume=tmp_path / "epoch1.pt")
    # the steps the dead run took after its checkpoint, again: the same masks, each rank's random state back
    assert resumed.ppl[:3] == pytest.approx(killed.ppl[12:], rel=1e-7)
