"""Experiment configuration: the seed's four presets as a typed, frozen dataclass.

A `ModelConfig` is saved inside every checkpoint and every job, so a run can always be
rebuilt from what it stored. Deployment settings (paths, database) never live here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16", "tf32"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "tf32")


class ConfigError(ValueError):
    """A config field has a value the model cannot train with."""


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
    vocab_size: int = 10000  # upper bound; the corpus' vocabulary may be smaller
    # Beyond the seed: reproducibility, placement and quick runs.
    seed: int = 0
    device: Device = "auto"
    max_steps_per_epoch: int | None = None  # cap training steps per epoch (quick runs)
    # fp32: everything in float32 (the reproductions). bf16: the matrix products and the LSTM under
    # autocast, with float32 weights, optimiser, clipping, losses and sums. tf32: CUDA's TensorFloat-32
    # matrix products (CUDA only).
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        positive_ints = ("num_layers", "num_steps", "hidden_size", "max_epoch", "max_max_epoch", "batch_size")
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be an integer >= 2, got {self.vocab_size!r}")
        for name in ("init_scale", "learning_rate", "max_grad_norm", "lr_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if (
            isinstance(self.keep_prob, bool)
            or not isinstance(self.keep_prob, int | float)
            or not 0 < self.keep_prob <= 1
        ):
            raise ConfigError(f"keep_prob must be in (0, 1], got {self.keep_prob!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be one of auto, cpu, cuda, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "tf32" and self.device == "cpu":
            raise ConfigError("precision 'tf32' needs a CUDA device; on the CPU use fp32 or bf16")
        cap = self.max_steps_per_epoch
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError(f"max_steps_per_epoch must be an integer >= 1 or null, got {cap!r}")

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

    def num_parameters(self, vocab_size: int | None = None) -> int:
        """Trainable parameter count (embedding, LSTM weights and one bias per layer, softmax)."""
        v, h = vocab_size or self.vocab_size, self.hidden_size
        lstm = self.num_layers * (4 * h * (h + h) + 4 * h)
        return v * h + lstm + h * v + v

    def forward_flops_per_token(self, vocab_size: int | None = None) -> float:
        """Forward FLOPs per token: 2 * (sum over layers of 4H(E_l + H) + H*V), the LSTM gates and the
        softmax layer (E_l = H here)."""
        v, h = vocab_size or self.vocab_size, self.hidden_size
        return 2.0 * (self.num_layers * 4 * h * (h + h) + h * v)

    def train_flops_per_token(self, vocab_size: int | None = None) -> float:
        """Training FLOPs per token: 3x the forward's."""
        return 3.0 * self.forward_flops_per_token(vocab_size)


FIELD_NAMES = frozenset(f.name for f in fields(ModelConfig))

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
    "test": ModelConfig(max_grad_norm=1.0, num_layers=1, num_steps=2, hidden_size=2, max_epoch=1, max_max_epoch=1),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name, with field overrides applied and validated."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return base.replace(**overrides)
