"""A job's experiment config: a preset plus field overrides, checked against the model, the corpus
and the deployment's size limits before the job is queued (so a worker never meets a config that
cannot run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import Invalid
from app.settings import Settings
from app.store.tables import Dataset
from model.config import FIELD_NAMES, ConfigError, ModelConfig, preset
from model.data import epoch_size
from model.tokenizers import SUBWORD

BYTES_PER_FLOAT = 4
LARGEST_INT = 2**63 - 1  # what a database integer and torch's seed accept


@dataclass(frozen=True)
class SizeEstimate:
    """What a config costs on a corpus: parameters and an upper estimate of training memory."""

    vocab_size: int  # the effective vocabulary: the corpus' types under the config's cap
    parameters: int
    train_memory_bytes: int


def train_vocabulary(config: ModelConfig, dataset: Dataset) -> int:
    """The vocabulary a job trains with: a word-level dataset's words (its `min_count` applied) under
    the config's cap; a subword dataset's every piece, which no cap may cut (see `build_config`)."""
    if dataset.tokenizer in SUBWORD:
        return dataset.vocab_size
    return config.vocabulary(dataset.vocab_size)


def estimate_size(config: ModelConfig, corpus_vocab_size: int) -> SizeEstimate:
    """Parameters and training memory of `config` on a corpus with `corpus_vocab_size` types.

    Memory ~ weights x 4 (weights, gradients, clipping temporaries, allocator slack) plus
    activations: per token of a [B, T] batch, about 10 saved values per LSTM unit and layer
    (gates, cell, output, dropout masks) and the V logits, x 3 for their gradients and the
    softmax temporaries.
    """
    v = config.vocabulary(corpus_vocab_size)
    parameters = config.num_parameters(v)
    weights = parameters * BYTES_PER_FLOAT * 4
    per_token = config.num_layers * config.hidden_size * 10 + v
    activations = config.batch_size * config.num_steps * per_token * BYTES_PER_FLOAT * 3
    return SizeEstimate(v, parameters, weights + activations)


LAYER_STEP_SECONDS = 2e-5  # per layer and time step (forward and backward): kernel calls, not FLOPs


@dataclass(frozen=True)
class TimeEstimate:
    """How long training takes on a worker of `settings.worker_gflops`, a rough but bounded guess."""

    steps_per_epoch: int
    step_seconds: float
    epoch_seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "step_seconds": round(self.step_seconds, 6),
            "epoch_seconds": round(self.epoch_seconds, 3),
        }


def estimate_time(config: ModelConfig, dataset: Dataset, settings: Settings) -> TimeEstimate:
    """Step and epoch time: the training FLOPs of a [B, T] batch at `worker_gflops`, plus a fixed
    cost per layer and time step; the epoch adds its validation pass (a forward, a third of a step)."""
    v = train_vocabulary(config, dataset)
    b, t = config.batch_size, config.num_steps
    step = config.train_flops_per_token(v) * b * t / (settings.worker_gflops * 1e9)
    step += LAYER_STEP_SECONDS * config.num_layers * t
    steps = epoch_size(dataset.train_tokens, b, t)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    valid_steps = epoch_size(dataset.valid_tokens, b, t)
    return TimeEstimate(max(steps, 0), step, step * max(steps, 0) + step / 3 * max(valid_steps, 0))


def build_config(settings: Settings, preset_name: str, overrides: dict[str, Any], dataset: Dataset) -> ModelConfig:
    """The config a job trains with; `Invalid` (with the numbers) when it cannot run here."""
    unknown = sorted(set(overrides) - FIELD_NAMES)
    if unknown:
        raise Invalid(f"unknown config field(s): {', '.join(unknown)}", field="overrides", fields=unknown)
    for name, value in overrides.items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INT:
            raise Invalid(f"{name} must be at most {LARGEST_INT}, got {value}", field=f"overrides.{name}")
    try:
        config = preset(preset_name, **overrides)
    except ConfigError as exc:
        raise Invalid(str(exc), field="preset" if "preset" in str(exc) else "overrides") from None

    if dataset.tokenizer in SUBWORD and config.vocab_size is not None and config.vocab_size < dataset.vocab_size:
        raise Invalid(
            f"vocab_size: dataset {dataset.id} is cut by a {dataset.tokenizer} model of {dataset.vocab_size:,} "
            f"tokens, every one of which the model needs; leave vocab_size out (its size is chosen at upload, "
            "with tokenizer_vocab_size)",
            field="overrides.vocab_size",
        )
    size = estimate_size(config, train_vocabulary(config, dataset))
    if size.parameters > settings.max_model_parameters:
        raise Invalid(
            f"the model would have {size.parameters:,} parameters (vocabulary {size.vocab_size:,}); "
            f"this server accepts at most {settings.max_model_parameters:,}",
            field="overrides",
            parameters=size.parameters,
            limit=settings.max_model_parameters,
        )
    if size.train_memory_bytes > settings.max_train_memory_bytes:
        raise Invalid(
            f"training would need about {size.train_memory_bytes / 2**30:,.1f} GiB of memory "
            f"({size.parameters:,} parameters, batch {config.batch_size} x {config.num_steps} steps, "
            f"vocabulary {size.vocab_size:,}); this server accepts at most "
            f"{settings.max_train_memory_bytes / 2**30:,.1f} GiB",
            field="overrides",
            train_memory_bytes=size.train_memory_bytes,
            limit=settings.max_train_memory_bytes,
        )

    timing = estimate_time(config, dataset, settings)
    if timing.step_seconds > settings.max_step_seconds:
        raise Invalid(
            f"one training step would take about {timing.step_seconds:,.1f} s ({config.num_layers} layers, "
            f"hidden {config.hidden_size}, batch {config.batch_size} x {config.num_steps} steps); this server "
            f"accepts at most {settings.max_step_seconds:,.1f} s a step",
            field="overrides",
            step_seconds=timing.step_seconds,
            limit=settings.max_step_seconds,
        )

    # The seed's batch layout needs B * (T + 1) tokens for one step; the test stream needs two.
    b, t = config.batch_size, config.num_steps
    for split, tokens in (("train", dataset.train_tokens), ("valid", dataset.valid_tokens)):
        if epoch_size(tokens, b, t) < 1:
            raise Invalid(
                f"dataset {dataset.id} has {tokens} {split} tokens: too few for batch_size={b} and "
                f"num_steps={t}, which need at least {b * (t + 1)}",
                field="overrides",
            )
    if dataset.test_tokens < 2:
        raise Invalid(f"dataset {dataset.id} has {dataset.test_tokens} test tokens: at least 2 are needed")
    return config
