"""How a scoring call groups its sentences into LSTM calls (`model.inference.scoring_groups`): the
least-cost grouping, checked against every grouping, within the call's bounds."""

from __future__ import annotations

import math
import random

import pytest

from model.inference import LSTM_CALL_COST, LSTM_STEP_COST, PLANNED_SENTENCES, lstm_rows, scoring_groups


def cost(lengths: list[int], ends: list[int], precision: str) -> float:
    total, start = 0.0, 0
    for end in ends:
        total += LSTM_CALL_COST + lengths[end - 1] * (LSTM_STEP_COST + lstm_rows(end - start, precision))
        start = end
    return total


def least_cost(lengths: list[int], batch_size: int, batch_tokens: int, precision: str) -> float:
    """The least cost over every grouping into consecutive ranges within the bounds (quadratic)."""
    best = [0.0] + [math.inf] * len(lengths)
    for end in range(1, len(lengths) + 1):
        for start in range(end):
            size = end - start
            if size > batch_size or (size > 1 and size * lengths[end - 1] > batch_tokens):
                continue
            best[end] = min(best[end], best[start] + cost(lengths[start:end], [size], precision))
    return best[-1]


def check_bounds(lengths: list[int], ends: list[int], batch_size: int, batch_tokens: int) -> None:
    assert ends and ends[-1] == len(lengths) and ends == sorted(set(ends))
    start = 0
    for end in ends:
        size = end - start
        assert size <= batch_size and (size == 1 or size * lengths[end - 1] <= batch_tokens)
        start = end


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_grouping_is_the_least_cost_one_within_the_bounds(precision: str) -> None:
    rng = random.Random(7)
    for count in (1, 2, 7, 8, 9, 31, 32, 33, 60, 150):
        for batch_size, batch_tokens in ((512, 8192), (40, 600)):
            lengths = sorted(
                rng.choice((rng.randint(1, 12), rng.randint(1, 80), rng.randint(300, 900))) for _ in range(count)
            )
            ends = scoring_groups(lengths, batch_size, batch_tokens, precision)
            check_bounds(lengths, ends, batch_size, batch_tokens)
            assert cost(lengths, ends, precision) == pytest.approx(
                least_cost(lengths, batch_size, batch_tokens, precision)
            )


def test_a_few_short_sentences_share_one_call() -> None:
    # single-sentence requests batched together: one LSTM call, not one per length band
    assert scoring_groups([3, 5, 9, 14, 20, 22], 512, 8192, "fp32") == [6]


def test_past_the_planned_count_sentences_are_grouped_by_length_bands() -> None:
    lengths = sorted(random.Random(1).randint(1, 60) for _ in range(PLANNED_SENTENCES + 1))
    ends = scoring_groups(lengths, 512, 8192, "fp32")
    check_bounds(lengths, ends, 512, 8192)
    start = 0
    for end in ends:
        assert lengths[end - 1] <= lengths[start] * 1.5 + 2
        start = end
