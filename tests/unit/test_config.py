"""ModelConfig: the four presets against REFERENCE.md 1.1, overrides, validation, the lr schedule,
serialisation and the cost formulas of REFERENCE.md 1.4."""

from __future__ import annotations

import math
from typing import Any

import pytest

from model.config import FIELD_NAMES, PRESETS, ConfigError, ModelConfig, preset

# REFERENCE.md 1.1, column by column (the seed's SmallConfig, MediumConfig, LargeConfig, TestConfig).
SEED_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(
        init_scale=0.1, learning_rate=1.0, max_grad_norm=5, num_layers=2, num_steps=20, hidden_size=200,
        max_epoch=4, max_max_epoch=13, keep_prob=1.0, lr_decay=0.5, batch_size=20, vocab_size=None,
    ),
    "medium": dict(
        init_scale=0.05, learning_rate=1.0, max_grad_norm=5, num_layers=2, num_steps=35, hidden_size=650,
        max_epoch=6, max_max_epoch=39, keep_prob=0.5, lr_decay=0.8, batch_size=20, vocab_size=None,
    ),
    "large": dict(
        init_scale=0.04, learning_rate=1.0, max_grad_norm=10, num_layers=2, num_steps=35, hidden_size=1500,
        max_epoch=14, max_max_epoch=55, keep_prob=0.35, lr_decay=1 / 1.15, batch_size=20, vocab_size=None,
    ),
    "test": dict(
        init_scale=0.1, learning_rate=1.0, max_grad_norm=1, num_layers=1, num_steps=2, hidden_size=2,
        max_epoch=1, max_max_epoch=1, keep_prob=1.0, lr_decay=0.5, batch_size=20, vocab_size=None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SEED_PRESETS))
def test_preset_has_the_seed_values(name: str) -> None:
    config = preset(name)
    for field, expected in SEED_PRESETS[name].items():
        assert getattr(config, field) == expected, field
    # The fields beyond the seed keep their neutral defaults; the test preset is a smoke run of 100 steps an epoch.
    cap, eval_cap = (100, 10_000) if name == "test" else (None, None)
    assert (config.seed, config.device, config.precision) == (0, "auto", "fp32")
    assert (config.max_steps_per_epoch, config.max_eval_tokens) == (cap, eval_cap)


def test_exactly_the_four_presets() -> None:
    assert set(PRESETS) == {"small", "medium", "large", "test"}
    # Every seed field is covered by the table above: a new field would need a reference value.
    beyond = {"seed", "device", "max_steps_per_epoch", "max_eval_tokens", "precision", "world_size"}
    assert set(SEED_PRESETS["small"]) | beyond == FIELD_NAMES


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("init_scale", 0.3),
        ("learning_rate", 0.7),
        ("max_grad_norm", 2.5),
        ("num_layers", 3),
        ("num_steps", 7),
        ("hidden_size", 33),
        ("max_epoch", 2),
        ("max_max_epoch", 5),
        ("keep_prob", 0.75),
        ("lr_decay", 0.9),
        ("batch_size", 3),
        ("vocab_size", 500),
        ("seed", 42),
        ("device", "cpu"),
        ("max_steps_per_epoch", 10),
    ],
)
def test_override_changes_only_that_field(field: str, value: Any) -> None:
    base = preset("small")
    changed = preset("small", **{field: value})
    assert getattr(changed, field) == value
    for other in FIELD_NAMES - {field}:
        assert getattr(changed, other) == getattr(base, other), other
    assert PRESETS["small"] == base  # the preset itself is not mutated


@pytest.mark.parametrize(
    "overrides",
    [
        {"hidden_size": -1},
        {"hidden_size": 0},
        {"num_layers": -2},
        {"batch_size": 0},
        {"num_steps": 0},
        {"max_max_epoch": 0},
        {"keep_prob": 0},
        {"keep_prob": 1.5},
        {"keep_prob": -0.1},
        {"init_scale": -0.1},
        {"learning_rate": 0},
        {"learning_rate": math.nan},
        {"max_grad_norm": math.inf},
        {"lr_decay": -0.5},
        {"vocab_size": 1},
        {"hidden_size": 2.5},
        {"num_steps": True},
        {"seed": -1},
        {"device": "tpu"},
        {"max_steps_per_epoch": 0},
    ],
)
def test_invalid_values_raise_config_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        preset("small", **overrides)


def test_unknown_field_and_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown config field"):
        preset("small", hiden_size=10)
    with pytest.raises(ConfigError, match="unknown config field"):
        ModelConfig.from_dict({**ModelConfig().to_dict(), "dropout": 0.5})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    assert issubclass(ConfigError, ValueError)


def test_config_is_frozen_and_round_trips_through_a_dict() -> None:
    config = preset("medium", seed=3, max_steps_per_epoch=7)
    with pytest.raises(AttributeError):
        config.hidden_size = 1  # type: ignore[misc]
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_small_lr_schedule() -> None:
    # REFERENCE.md 1.3: small trains epochs 1-4 at 1.0, epoch 5 at 0.5, epoch 6 at 0.25 (lr_at is 0-based).
    small = preset("small")
    assert [small.lr_at(e) for e in range(6)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]
    assert small.lr_at(12) == 0.5**9  # the last of 13 epochs: 0.00195..., printed as 0.002 in the table


def test_medium_and_large_lr_schedule() -> None:
    medium = preset("medium")
    assert [medium.lr_at(e) for e in range(8)] == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.64])
    large = preset("large")
    assert all(large.lr_at(e) == 1.0 for e in range(14))
    assert large.lr_at(14) == pytest.approx(1 / 1.15)
    assert large.lr_at(15) == pytest.approx(1 / 1.15**2)
    assert large.lr_at(54) == pytest.approx(1.15**-41)


def test_lr_schedule_scales_with_learning_rate() -> None:
    config = preset("small", learning_rate=0.2)
    assert config.lr_at(0) == pytest.approx(0.2)
    assert config.lr_at(5) == pytest.approx(0.2 * 0.25)


@pytest.mark.parametrize(
    ("name", "params_m", "train_mflop"),
    [("small", 4.65, 15.8), ("medium", 19.8, 79.6), ("large", 66.0, 306)],
)
def test_costs_match_reference_table(name: str, params_m: float, train_mflop: float) -> None:
    config = preset(name)
    assert config.num_parameters(10_000) / 1e6 == pytest.approx(params_m, rel=0.01)
    assert config.train_flops_per_token(10_000) / 1e6 == pytest.approx(train_mflop, rel=0.01)
    # A cap bounds the corpus' vocabulary; without one the corpus' size is needed.
    capped = config.replace(vocab_size=10_000)
    assert capped.num_parameters() == config.num_parameters(10_000) == capped.num_parameters(33_278)
    assert capped.train_flops_per_token(100) < capped.train_flops_per_token()
    with pytest.raises(ConfigError):
        config.num_parameters()
