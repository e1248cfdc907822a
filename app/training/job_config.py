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


# Costs beyond the FLOPs, measured on a 2-core CPU (a CUDA device: the GPU column): a training step's
# fixed work (the optimiser, clipping, reading the loss back), each layer and time step's kernel calls,
# each logit of a step (the softmax over the vocabulary and its gradient move memory, not FLOPs), and
# each token and layer of the test stream (B = 1: the LSTM's time steps one after another).
DEVICE_COSTS: dict[str, dict[str, float]] = {
    # allreduce: bytes/s one all-reduce of the gradients moves per step with world_size > 1 (gloo
    # between processes of one machine: about 0.8 GB/s measured, docs/results/distributed.md; NCCL)
    "cpu": {"step": 1e-3, "layer_step": 2e-5, "logit": 1e-8, "test_layer_token": 3e-5, "allreduce": 0.8e9},
    "cuda": {"step": 5e-4, "layer_step": 2e-5, "logit": 2e-10, "test_layer_token": 2e-5, "allreduce": 50e9},
}
LOAD_TOKEN_SECONDS = 2.7e-6  # reading, encoding and counting the corpus before the first step
EVAL_FRACTION = 0.25  # a validation batch (forward only, no optimiser) against a training step
LAYER_STEP_SECONDS = DEVICE_COSTS["cpu"]["layer_step"]


@dataclass(frozen=True)
class TimeEstimate:
    """How long training takes on a worker's device (`cpu`: `settings.worker_gflops`, `cuda`:
    `settings.cuda_gflops`), a rough but bounded guess: the corpus load, every epoch's steps and
    validation pass, and the test run."""

    steps_per_epoch: int
    step_seconds: float
    epoch_seconds: float
    epochs: int = 1
    test_seconds: float = 0.0
    load_seconds: float = 0.0
    device: str = "cpu"

    @property
    def total_seconds(self) -> float:
        return self.load_seconds + self.epochs * self.epoch_seconds + self.test_seconds

    def as_dict(self) -> dict[str, float | int]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "step_seconds": round(self.step_seconds, 6),
            "epoch_seconds": round(self.epoch_seconds, 3),
            "test_seconds": round(self.test_seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
        }


def estimate_time(config: ModelConfig, dataset: Dataset, settings: Settings, device: str = "cpu") -> TimeEstimate:
    """Step, epoch and whole-run time on `device`: the training FLOPs of a [B, T] batch at the
    device's GFLOP/s, plus the costs of `DEVICE_COSTS`; an epoch adds its validation pass, the run
    its corpus load and its test run."""
    costs = DEVICE_COSTS.get(device, DEVICE_COSTS["cpu"])
    gflops = settings.cuda_gflops if device == "cuda" else settings.worker_gflops
    v = train_vocabulary(config, dataset)
    b, t, layers, ranks = config.batch_size, config.num_steps, config.num_layers, config.world_size
    # With world_size N each process computes 1/N of the batch: on CUDA each on its own GPU, on a
    # CPU on the same cores (no faster); then one all-reduce of every gradient (ring: 2 (N-1)/N of it).
    devices = ranks if device == "cuda" else 1
    step = config.train_flops_per_token(v) * b * t / (gflops * 1e9 * devices)
    step += costs["layer_step"] * layers * t + costs["logit"] * b * t * v / devices + costs["step"]
    if ranks > 1:
        gradient_bytes = 4 * estimate_size(config, v).parameters
        step += 2 * (ranks - 1) / ranks * gradient_bytes / costs["allreduce"]
    steps = max(epoch_size(dataset.train_tokens, b, t), 0)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    cap = config.max_eval_tokens
    valid_tokens = dataset.valid_tokens if cap is None else min(dataset.valid_tokens, cap)
    test_tokens = dataset.test_tokens if cap is None else min(dataset.test_tokens, cap)
    valid_steps = max(epoch_size(valid_tokens, b, t), 0)
    epoch = step * steps + step * EVAL_FRACTION * valid_steps
    per_test_token = (
        config.forward_flops_per_token(v) / (gflops * 1e9)
        + costs["test_layer_token"] * layers
        + costs["logit"] * v * EVAL_FRACTION
    )
    tokens = dataset.train_tokens + dataset.valid_tokens + dataset.test_tokens
    return TimeEstimate(
        steps_per_epoch=steps,
        step_seconds=step,
        epoch_seconds=epoch,
        epochs=config.max_max_epoch,
        test_seconds=per_test_token * max(test_tokens - 1, 0),
        load_seconds=LOAD_TOKEN_SECONDS * tokens,
        device=device,
    )


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
        if not exc.problems:
            raise Invalid(str(exc), field="preset" if "preset" in str(exc) else "overrides") from None
        errors = [{"field": f"overrides.{name}", "message": message} for name, message in exc.problems]
        raise Invalid(str(exc), field=errors[0]["field"], errors=errors) from None

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
