"""model.network: nn.LSTM with a frozen zero b_hh computes TF's BasicLSTMCell(forget_bias=0) (checked
against a hand-written cell in TF's gate order), the seed's initialisation, and where dropout acts."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from model.config import preset
from model.network import LSTMLanguageModel, detach, resolve_device


def tf_kernel(model: LSTMLanguageModel, layer: int) -> tuple[Tensor, Tensor]:
    """TF's [in + H, 4H] kernel and [4H] bias (gates i, j, f, o) from PyTorch's (i, f, g, o) weights."""
    w_ih = getattr(model.lstm, f"weight_ih_l{layer}")  # [4H, in]
    w_hh = getattr(model.lstm, f"weight_hh_l{layer}")  # [4H, H]
    bias = getattr(model.lstm, f"bias_ih_l{layer}") + getattr(model.lstm, f"bias_hh_l{layer}")
    i, f, g, o = torch.cat([w_ih, w_hh], dim=1).chunk(4, dim=0)  # each [H, in + H]
    bi, bf, bg, bo = bias.chunk(4)
    return torch.cat([i, g, f, o], dim=0).T, torch.cat([bi, bg, bf, bo])


def tf_basic_lstm_cell(x: Tensor, h: Tensor, c: Tensor, kernel: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """TF BasicLSTMCell with forget_bias = 0.0, as the seed builds it."""
    i, j, f, o = (torch.cat([x, h], dim=1) @ kernel + bias).chunk(4, dim=1)
    new_c = c * torch.sigmoid(f + 0.0) + torch.sigmoid(i) * torch.tanh(j)
    new_h = torch.tanh(new_c) * torch.sigmoid(o)
    return new_h, new_c


def test_lstm_equals_tf_basic_lstm_cell() -> None:
    torch.manual_seed(0)
    vocab, layers, batch, steps = 13, 2, 3, 4
    model = LSTMLanguageModel(preset("test", hidden_size=6, num_layers=layers, init_scale=0.5), vocab).eval()
    # Non-zero input biases, so that the bias' gate order is exercised too (b_hh stays zero).
    with torch.no_grad():
        for layer in range(layers):
            getattr(model.lstm, f"bias_ih_l{layer}").uniform_(-1, 1)
    x = torch.randint(0, vocab, (batch, steps))
    h0 = torch.randn(layers, batch, 6) * 0.5
    c0 = torch.randn(layers, batch, 6) * 0.5
    with torch.no_grad():
        logits, (h_n, c_n) = model(x, (h0, c0))
        # The same computation, one TF cell per layer and time step.
        kernels = [tf_kernel(model, layer) for layer in range(layers)]
        h, c = list(h0), list(c0)
        expected = []
        for t in range(steps):
            inp = model.embedding(x[:, t])
            for layer, (kernel, bias) in enumerate(kernels):
                h[layer], c[layer] = tf_basic_lstm_cell(inp, h[layer], c[layer], kernel, bias)
                inp = h[layer]
            expected.append(model.decoder(inp))
    torch.testing.assert_close(logits, torch.stack(expected, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n, torch.stack(h), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c_n, torch.stack(c), rtol=1e-5, atol=1e-6)


def test_forget_bias_is_zero_not_one() -> None:
    # TF's default forget_bias=1.0 would give a different function; the seed passes 0.0.
    torch.manual_seed(1)
    model = LSTMLanguageModel(preset("test", hidden_size=4, num_layers=1, init_scale=0.5), 7).eval()
    kernel, bias = tf_kernel(model, 0)
    x = model.embedding(torch.tensor([3]))
    h = c = torch.zeros(1, 4)
    c1 = c + 0.7  # a non-zero cell state, so the forget gate matters
    with torch.no_grad():
        _, (_, c_model) = model.lstm(x.unsqueeze(1), (h.unsqueeze(0), c1.unsqueeze(0)))
        _, c_fb0 = tf_basic_lstm_cell(x, h, c1, kernel, bias)
        i, j, f, _ = (torch.cat([x, h], dim=1) @ kernel + bias).chunk(4, dim=1)
        c_fb1 = c1 * torch.sigmoid(f + 1.0) + torch.sigmoid(i) * torch.tanh(j)
    torch.testing.assert_close(c_model[0], c_fb0)
    assert not torch.allclose(c_model[0], c_fb1, atol=1e-3)


def test_initialisation_ranges() -> None:
    torch.manual_seed(0)
    scale = 0.1
    model = LSTMLanguageModel(preset("small", hidden_size=16, init_scale=scale), 50)
    names = dict(model.named_parameters())
    assert set(names) == {
        "embedding.weight",
        "decoder.weight",
        "decoder.bias",
        *(f"lstm.{kind}_l{k}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in range(2)),
    }
    for name, param in names.items():
        if name.startswith("lstm.bias"):
            assert torch.count_nonzero(param) == 0, name
        else:
            # uniform in [-s, s]: inside the range and filling it (not, e.g., PyTorch's 1/sqrt(H) default)
            assert param.abs().max() <= scale, name
            assert param.abs().max() > 0.8 * scale, name
            assert param.min() < 0 < param.max(), name


def test_bias_hh_frozen_bias_ih_trainable() -> None:
    model = LSTMLanguageModel(preset("small", hidden_size=8, num_layers=3), 20)
    for k in range(3):
        assert not getattr(model.lstm, f"bias_hh_l{k}").requires_grad
        assert getattr(model.lstm, f"bias_ih_l{k}").requires_grad
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()} - {f"lstm.bias_hh_l{k}" for k in range(3)}


def test_dropout_probabilities() -> None:
    two = LSTMLanguageModel(preset("medium", hidden_size=8), 10)
    assert two.dropout.p == pytest.approx(0.5)
    assert two.lstm.dropout == pytest.approx(0.5)  # between layer 1 and layer 2
    one = LSTMLanguageModel(preset("test", keep_prob=0.5), 10)
    assert one.lstm.dropout == 0.0  # one layer: nothing between layers (and no PyTorch warning)
    assert one.dropout.p == pytest.approx(0.5)


def test_embedding_and_top_output_are_dropped_state_is_not() -> None:
    torch.manual_seed(0)
    hidden, batch, steps = 64, 4, 5
    model = LSTMLanguageModel(preset("test", hidden_size=hidden, keep_prob=0.5), 30).train()
    seen: dict[str, Tensor] = {}
    model.lstm.register_forward_pre_hook(lambda _m, args: seen.__setitem__("lstm_in", args[0]))
    model.lstm.register_forward_hook(lambda _m, _a, out: seen.__setitem__("lstm_out", out[0]))
    x = torch.randint(0, 30, (batch, steps))
    with torch.no_grad():
        out, (h, _) = model.hidden(x, model.zero_state(batch))
        emb = model.embedding(x)

    def check_dropped(dropped: Tensor, full: Tensor) -> None:
        kept = dropped != 0
        assert 0.35 < 1 - kept.float().mean().item() < 0.65  # about 1 - keep_prob zeroed
        torch.testing.assert_close(dropped[kept], full[kept] / 0.5)  # the rest scaled by 1 / keep_prob

    check_dropped(seen["lstm_in"], emb)  # dropout on the embeddings
    check_dropped(out, seen["lstm_out"])  # dropout on the top layer's output
    torch.testing.assert_close(h[0], seen["lstm_out"][:, -1])  # the state passed on is never dropped


def test_eval_mode_is_deterministic_and_equals_no_dropout() -> None:
    torch.manual_seed(0)
    dropped = LSTMLanguageModel(preset("test", hidden_size=16, num_layers=2, keep_prob=0.5), 20)
    plain = LSTMLanguageModel(preset("test", hidden_size=16, num_layers=2, keep_prob=1.0), 20)
    plain.load_state_dict(dropped.state_dict())
    x = torch.randint(0, 20, (3, 6))
    with torch.no_grad():
        dropped.train()
        a, _ = dropped(x, dropped.zero_state(3))
        b, _ = dropped(x, dropped.zero_state(3))
        assert not torch.equal(a, b)  # training mode samples fresh masks
        dropped.eval()
        c, _ = dropped(x, dropped.zero_state(3))
        d, _ = dropped(x, dropped.zero_state(3))
        e, _ = plain.eval()(x, plain.zero_state(3))
    assert torch.equal(c, d)
    assert torch.equal(c, e)


def test_shapes_zero_state_and_detach() -> None:
    model = LSTMLanguageModel(preset("test", hidden_size=5, num_layers=3), 11)
    state = model.zero_state(4)
    assert state[0].shape == state[1].shape == (3, 4, 5)
    assert state[0].data_ptr() != state[1].data_ptr()
    assert torch.count_nonzero(state[0]) == 0
    logits, (h, c) = model(torch.zeros(4, 7, dtype=torch.long), state)
    assert logits.shape == (4, 7, 11)
    assert h.requires_grad
    h2, c2 = detach((h, c))
    assert not h2.requires_grad and not c2.requires_grad
    assert torch.equal(h2, h)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")
