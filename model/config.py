"""Experiment configuration: the seed's four presets as a typed, frozen dataclass.

A `ModelConfig` is saved inside every checkpoint and every job, so a run can always be
rebuilt from what it stored. Deployment settings (paths, database) never live here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16", "tf32"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32")


class ConfigError(ValueError):
    """Config fields have values the model cannot train with: `problems` holds (field, message) for
    each of them (empty for an error about no one field, such as an unknown preset)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


MAX_WORLD_SIZE = 64  # processes one run may train on (model.distributed)

# Every field is bounded, so that no accepted config can take unbounded time or memory per step
# (the deployment's own limits on parameters, memory and step time come on top, in the service).
INT_RANGES: dict[str, tuple[int, int]] = {
    "num_layers": (1, 16),
    "num_steps": (1, 1000),
    "hidden_size": (1, 8192),
    "max_epoch": (1, 10_000),
    "max_max_epoch": (1, 10_000),
    "batch_size": (1, 4096),
    "vocab_size": (2, 10_000_000),
    "world_size": (1, MAX_WORLD_SIZE),
}
# (low, high]: learning rates past 100 only diverge; a decay above 1 is a growth that overflows.
FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "init_scale": (0.0, 10.0),
    "learning_rate": (0.0, 100.0),
    "max_grad_norm": (0.0, 1e6),
    "lr_decay": (0.0, 1.0),
}
MAX_SEED = 2**63 - 1
MAX_STEPS = 1_000_000_000


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one run. Field names and meanings follow the seed's `SmallConfig`."""

    init_scale: float = 0.1  # weights ~ U(-init_scale, init_scale)
    learning_rate: float = 1.0  # SGD lr for the first `max_epoch` epochs
    max_grad_norm: float = 5.0  # global-norm clip, on the seed's loss scale
    num_layers: int = 2
    num_steps: int = 20  # truncated BPTT length T
    hidden_size: int = 200  # embedding and LSTM width H
    max_epoch: int = 4  # epochs at the full learning rate
    max_max_epoch: int = 13  # total epochs
    keep_prob: float = 1.0  # 1 - dropout probability
    lr_decay: float = 0.5  # lr multiplier per epoch after `max_epoch`
    batch_size: int = 20  # B parallel streams
    # A cap on the vocabulary: the most frequent training words are kept, the rest become <unk>.
    # None (the presets): every training word. On PTB both give the seed's 10,000 words.
    vocab_size: int | None = None
    # Beyond the seed: reproducibility, placement and quick runs.
    seed: int = 0
    device: Device = "auto"
    max_steps_per_epoch: int | None = None  # cap training steps per epoch (quick runs)
    # Evaluate on the first this many tokens of the validation and test splits only (quick runs; their
    # perplexities are then of those tokens, not of the splits). None: the whole splits, as the seed.
    max_eval_tokens: int | None = None
    # fp32: everything in float32 (the reproductions). bf16: the matrix products and the LSTM under
    # autocast, with float32 weights, optimiser, clipping, losses and sums. tf32: CUDA's TensorFloat-32
    # matrix products (CUDA only).
    precision: Precision = "fp32"
    # Processes the run trains on (torch.distributed, `model.distributed`): each takes a contiguous
    # block of batch_size / world_size streams and the gradients are summed across them, so without
    # dropout the numbers are those of one process; with dropout each process draws its own masks.
    world_size: int = 1

    def __post_init__(self) -> None:
        problems = list(self.problems())
        if problems:
            raise ConfigError("; ".join(message for _, message in problems), problems)

    def problems(self) -> Iterator[tuple[str, str]]:
        """(field, message) for every field whose value the model cannot train with."""
        bad = set()
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if name == "vocab_size" and value is None:
                continue  # no cap: every training word
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                null = " or null (every training word)" if name == "vocab_size" else ""
                bad.add(name)
                yield name, f"{name} must be an integer in [{low}, {high:,}]{null}, got {value!r}"
        for name, (bottom, top) in FLOAT_RANGES.items():
            number = getattr(self, name)
            if (
                isinstance(number, bool)
                or not isinstance(number, int | float)
                or not math.isfinite(number)
                or not bottom < number <= top
            ):
                yield name, f"{name} must be a number in ({bottom}, {top}], got {number!r}"
        if (
            isinstance(self.keep_prob, bool)
            or not isinstance(self.keep_prob, int | float)
            or not 0 < self.keep_prob <= 1
        ):
            yield "keep_prob", f"keep_prob must be in (0, 1], got {self.keep_prob!r}"
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            yield "seed", f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}"
        if self.device not in ("auto", "cpu", "cuda"):
            yield "device", f"device must be one of auto, cpu, cuda, got {self.device!r}"
        if self.precision not in PRECISIONS:
            yield "precision", f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        elif self.precision == "tf32" and self.device == "cpu":
            yield "precision", "precision 'tf32' needs a CUDA device; on the CPU use fp32 or bf16"
        if not bad & {"batch_size", "world_size"} and self.batch_size % self.world_size:
            yield (
                "world_size",
                f"batch_size {self.batch_size} is not divisible by world_size {self.world_size}: "
                "each process takes an equal block of batch_size / world_size streams",
            )
        cap = self.max_steps_per_epoch
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_STEPS):
            yield (
                "max_steps_per_epoch",
                f"max_steps_per_epoch must be an integer in [1, {MAX_STEPS:,}] or null, got {cap!r}",
            )
        eval_cap = self.max_eval_tokens
        if eval_cap is not None and (
            isinstance(eval_cap, bool) or not isinstance(eval_cap, int) or not 2 <= eval_cap <= MAX_STEPS
        ):
            yield (
                "max_eval_tokens",
                f"max_eval_tokens must be an integer in [2, {MAX_STEPS:,}] or null, got {eval_cap!r}",
            )

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed; unknown names raise `ConfigError`."""
        unknown = sorted(set(overrides) - FIELD_NAMES)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        unknown = sorted(set(data) - FIELD_NAMES)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based `epoch`: full for `max_epoch` epochs, then decayed once per epoch."""
        return self.learning_rate * self.lr_decay ** max(epoch + 1 - self.max_epoch, 0)

    def vocabulary(self, corpus_words: int | None = None) -> int:
        """Words the model has: the corpus' training words (`corpus_words`) under the cap."""
        if corpus_words is None:
            if self.vocab_size is None:
                raise ConfigError("vocab_size is null (every training word): give the corpus' vocabulary size")
            return self.vocab_size
        return corpus_words if self.vocab_size is None else min(self.vocab_size, corpus_words)

    def num_parameters(self, vocab_size: int | None = None) -> int:
        """Trainable parameter count (embedding, LSTM weights and one bias per layer, softmax)."""
        v, h = self.vocabulary(vocab_size), self.hidden_size
        lstm = self.num_layers * (4 * h * (h + h) + 4 * h)
        return v * h + lstm + h * v + v

    def forward_flops_per_token(self, vocab_size: int | None = None) -> float:
        """Forward FLOPs per token: 2 * (sum over layers of 4H(E_l + H) + H*V), the LSTM gates and the
        softmax layer (E_l = H here)."""
        v, h = self.vocabulary(vocab_size), self.hidden_size
        return 2.0 * (self.num_layers * 4 * h * (h + h) + h * v)

    def train_flops_per_token(self, vocab_size: int | None = None) -> float:
        """Training FLOPs per token: 3x the forward's."""
        return 3.0 * self.forward_flops_per_token(vocab_size)


FIELD_NAMES = frozenset(f.name for f in fields(ModelConfig))
TEST_PRESET_STEPS = 100
TEST_PRESET_EVAL_TOKENS = 10_000
PAPER_PRESETS = ("small", "medium", "large")  # Zaremba et al. (2014)'s three, exactly

PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(),
    "medium": ModelConfig(
        init_scale=0.05, num_steps=35, hidden_size=650, max_epoch=6, max_max_epoch=39, keep_prob=0.5, lr_decay=0.8
    ),
    "large": ModelConfig(
        init_scale=0.04,
        max_grad_norm=10.0,
        num_steps=35,
        hidden_size=1500,
        max_epoch=14,
        max_max_epoch=55,
        keep_prob=0.35,
        lr_decay=1 / 1.15,
    ),
    # The seed's TestConfig, with each epoch capped at 100 steps and its evaluation at the first 10,000
    # tokens of the validation and test splits: a smoke run of seconds on any corpus (a whole PTB epoch
    # at T = 2 is 23,239 steps, its test run 82,430 tokens one after another).
    "test": ModelConfig(
        max_grad_norm=1.0,
        num_layers=1,
        num_steps=2,
        hidden_size=2,
        max_epoch=1,
        max_max_epoch=1,
        max_steps_per_epoch=TEST_PRESET_STEPS,
        max_eval_tokens=TEST_PRESET_EVAL_TOKENS,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name, with field overrides applied and validated."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return base.replace(**overrides)
