"""The network: embedding -> dropout -> L stacked LSTM layers (each output dropped out) -> softmax.

It computes TF's `BasicLSTMCell(forget_bias=0.0)` exactly. PyTorch's fused `nn.LSTM` (cuDNN on a
GPU) has the same gates in another order (i, f, g, o against TF's i, j, f, o) and two bias vectors;
TF trains one, so `b_hh` stays at zero and is frozen: training both would double the bias' step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from model.config import PRECISIONS, ModelConfig

State = tuple[Tensor, Tensor]  # (h, c), each [L, B, H]


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model of Zaremba et al. (2014)."""

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        h, p = config.hidden_size, 1.0 - config.keep_prob
        self.vocab_size = vocab_size
        self.num_layers = config.num_layers
        self.hidden_size = h
        self.embedding = nn.Embedding(vocab_size, h)
        self.dropout = nn.Dropout(p)  # on the embeddings and on the top layer's output
        # nn.LSTM's own dropout acts between layers only; the recurrent state is never dropped.
        self.lstm = nn.LSTM(h, h, config.num_layers, batch_first=True, dropout=p if config.num_layers > 1 else 0.0)
        self.decoder = nn.Linear(h, vocab_size)
        self.reset_parameters(config.init_scale)

    def reset_parameters(self, init_scale: float) -> None:
        """The seed's init: every weight (and the softmax bias) ~ U(-s, s), LSTM biases zero."""
        for name, param in self.named_parameters():
            if name.startswith("lstm.bias"):
                nn.init.zeros_(param)
            else:
                nn.init.uniform_(param, -init_scale, init_scale)
        for layer in range(self.num_layers):
            getattr(self.lstm, f"bias_hh_l{layer}").requires_grad_(False)

    def zero_state(self, batch_size: int) -> State:
        """All-zero (h, c), each [L, B, H], on the model's device."""
        weight = self.decoder.weight
        zeros = weight.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return zeros, zeros.clone()

    def hidden(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Top-layer outputs [B, T, H] for input ids [B, T], and the final state."""
        emb = self.dropout(self.embedding(x))  # [B, T, H]
        out, (h, c) = self.lstm(emb, state)  # [B, T, H], a transposed view of the LSTM's [T, B, H]
        dtype = self.decoder.weight.dtype
        if out.dtype != dtype:
            # Under bf16 autocast: made contiguous, the decoder adds its bias inside the product
            # (addmm) instead of in a pass of its own. float32 keeps the path its recorded runs took.
            out = out.contiguous()
        # Under bf16 autocast the LSTM returns bf16 states; the carried state keeps the weights' dtype.
        return self.dropout(out), (h.to(dtype), c.to(dtype))

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Logits [B, T, V] for input ids [B, T], and the final state."""
        out, state = self.hidden(x, state)
        return self.decoder(out), state


def detach(state: State) -> State:
    """Cut the graph between batches (truncated back-propagation); values flow on."""
    return state[0].detach(), state[1].detach()


def resolve_device(choice: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(choice)


def supports_precision(device: torch.device, precision: str) -> bool:
    """Whether `device` can compute in `precision` (bf16 needs AVX512-BF16/AMX or a bf16 GPU)."""
    if precision == "fp32":
        return True
    if precision == "tf32":
        return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
    if precision == "bf16":
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def supported_precisions(device: torch.device) -> list[str]:
    """The precisions `device` can compute in, fp32 first: what a worker or a server can offer."""
    return [p for p in PRECISIONS if supports_precision(device, p)]


class PrecisionError(RuntimeError):
    """The device cannot compute in the precision asked for; trying again on the same device cannot help."""


def check_precision(device: torch.device, precision: str) -> None:
    """Raise `PrecisionError` when `device` cannot compute in `precision`."""
    if not supports_precision(device, precision):
        offered = ", ".join(supported_precisions(device))
        raise PrecisionError(
            f"precision {precision!r} is not supported on this machine's {device.type} (it supports {offered})"
        )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """The mixed-precision context for `precision`: bf16 autocast, or nothing (fp32, tf32).

    TF32 is not a context: `set_matmul_precision` switches it for the process.
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_matmul_precision(device: torch.device, precision: str) -> None:
    """On CUDA, allow TF32 matrix products and cuDNN kernels exactly when `precision` is tf32."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
