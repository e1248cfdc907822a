"""The fast paths in `model.inference` that the API relies on, against their plain definitions:
the softmax normaliser of scoring (and its fallback for extreme logits), the nucleus filter's
partial sort, inverse-CDF sampling, the single-step LSTM cell of generation and its bf16 decode of
a single row."""

from __future__ import annotations

import math

import pytest
import torch

from model import inference
from model.config import preset
from model.data import Vocabulary
from model.inference import _filter_logits, _sample, packed_hidden, score_sentences, softmax_logprobs, step_logits
from model.network import LSTMLanguageModel


@pytest.fixture
def small_model() -> LSTMLanguageModel:
    torch.manual_seed(0)
    return LSTMLanguageModel(preset("test", hidden_size=12, num_layers=2, init_scale=0.5), 300).eval()


def packed_token_logprobs(
    model: LSTMLanguageModel, x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    return softmax_logprobs(model, *packed_hidden(model, x, y, lengths))


def reference_logprobs(model: LSTMLanguageModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits, _ = model(x, model.zero_state(x.size(0)))
    return torch.log_softmax(logits.double(), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("bias_shift", [0.0, 95.0, -120.0])  # ordinary, overflowing, underflowing logits
def test_packed_logprobs_equal_log_softmax(small_model: LSTMLanguageModel, bias_shift: float) -> None:
    with torch.no_grad():
        small_model.decoder.bias += bias_shift
        small_model.decoder.bias[7] += 30.0  # one dominant word
    x = torch.randint(0, 300, (5, 9))
    y = torch.randint(0, 300, (5, 9))
    y[:, 0] = 7
    lengths = torch.tensor([9, 1, 4, 9, 6])
    with torch.inference_mode():
        got = packed_token_logprobs(small_model, x, y, lengths)
        want = reference_logprobs(small_model, x, y)
    real = torch.arange(9).unsqueeze(0) < lengths.unsqueeze(1)
    assert got.shape == (int(lengths.sum()),)
    assert torch.allclose(got.double(), want[real], atol=2e-5), (got.double() - want[real]).abs().max()


def test_packed_logprobs_use_blocks(small_model: LSTMLanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "SOFTMAX_ROWS", 4)  # several blocks and a ragged last one
    x, y = torch.randint(0, 300, (3, 7)), torch.randint(0, 300, (3, 7))
    with torch.inference_mode():
        got = packed_token_logprobs(small_model, x, y, torch.tensor([7, 7, 7]))
    assert torch.allclose(got.double(), reference_logprobs(small_model, x, y).flatten(), atol=1e-5)


def test_a_call_shares_softmax_blocks_across_groups(
    small_model: LSTMLanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups of different lengths feed one queue of blocks, run as they fill: the numbers are each
    sentence's own, in the input order."""
    monkeypatch.setattr(inference, "SOFTMAX_ROWS", 4)
    monkeypatch.setattr(inference, "SOFTMAX_QUEUE_ROWS", 8)
    vocab = Vocabulary(("<eos>", "<unk>", *(f"w{i}" for i in range(298))))
    generator = torch.Generator().manual_seed(3)
    sentences = [
        [f"w{int(i)}" for i in torch.randint(0, 298, (int(n),), generator=generator)]
        for n in torch.randint(0, 12, (40,), generator=generator)
    ]
    with torch.inference_mode():
        scores = score_sentences(small_model, vocab, sentences, batch_size=3)
        for words, score in zip(sentences, scores, strict=True):
            ids = [vocab.id_of(w) for w in words] + [vocab.eos_id]
            x, y = torch.tensor([[vocab.eos_id, *ids[:-1]]]), torch.tensor([ids])
            want = reference_logprobs(small_model, x, y)[0]
            assert score.tokens == [*words, "<eos>"]
            assert torch.allclose(torch.tensor(score.logprobs, dtype=torch.float64), want, atol=1e-5)


def full_sort_nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus by its definition: sort everything, keep the smallest prefix reaching top_p."""
    sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p
    return torch.full_like(logits, -math.inf).scatter(-1, idx, sorted_logits.masked_fill(drop, -math.inf))


@pytest.mark.parametrize("scale", [0.01, 1.0, 8.0])  # flat (full sort needed) to peaked (partial sort)
@pytest.mark.parametrize("top_p", [1e-9, 0.5, 0.9, 0.999])
def test_the_nucleus_filter_keeps_the_defined_set(scale: float, top_p: float) -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 10_000) * scale
    got, want = _filter_logits(logits, None, top_p), full_sort_nucleus(logits, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    kept = ~torch.isinf(want)
    assert torch.equal(got[kept], want[kept])
    both = _filter_logits(logits, 50, top_p)  # top-k first, then the nucleus of what is left
    assert int((~torch.isinf(both)).sum(dim=-1).max()) <= 50


def test_inverse_cdf_sampling_follows_the_distribution() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).expand(20_000, -1)
    generator = torch.Generator().manual_seed(0)
    draws = _sample(probs, generator)
    counts = torch.bincount(draws, minlength=6).double() / draws.numel()
    assert counts[[0, 2, 5]].sum() == 0  # a zero-probability word is never drawn
    assert torch.allclose(counts, probs[0].double(), atol=0.02)
    again = _sample(probs, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_one_lstm_cell_step_equals_the_sequence_kernel(small_model: LSTMLanguageModel) -> None:
    ids = torch.tensor([3, 9, 0, 299])
    state = (torch.randn(2, 4, 12), torch.randn(2, 4, 12))
    with torch.inference_mode():
        logits, (h, c) = step_logits(small_model, ids, state)
        want_logits, (want_h, want_c) = small_model(ids.unsqueeze(-1), state)
    assert torch.allclose(logits, want_logits[:, -1], atol=1e-6)
    assert torch.allclose(h, want_h, atol=1e-6) and torch.allclose(c, want_c, atol=1e-6)


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 support (AVX512-BF16 or AMX)"
)
def test_a_single_rows_bf16_decode_agrees_with_either_kernel(
    small_model: LSTMLanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row in bf16 goes through `mv` on CPUs with AMX and the product elsewhere: both are the
    fp32 logits to bf16's precision, and a row decoded alone is the same row decoded in a batch to it."""
    hidden = torch.randn(1, 1, small_model.hidden_size)
    full = inference.decode(small_model, hidden)
    batch = inference.decode(small_model, torch.cat([hidden, torch.randn(1, 3, small_model.hidden_size)], 1), "bf16")
    for amx in (True, False):
        monkeypatch.setattr(inference, "AMX", amx)
        low = inference.decode(small_model, hidden, "bf16")
        assert low.shape == full.shape and low.dtype == torch.float32
        torch.testing.assert_close(low, full, rtol=0.02, atol=0.02)
        torch.testing.assert_close(low[0, 0], batch[0, 0], rtol=0.01, atol=0.01)
