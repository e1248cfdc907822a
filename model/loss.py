"""The training and evaluation loss: summed next-word cross entropy, in float32 whatever the logits.

float32 logits go through `F.cross_entropy`: the reproductions' numbers, bit for bit.

bf16 logits (bf16 autocast) would otherwise be widened to a float32 copy of [N, V], put through a
float32 log-softmax, given an [N, V] zero-filled gradient for the target picks, the log-softmax
backward and a cast back: five passes over 16 MB in a small-preset step, a third of a bf16 step on
a CPU. `_FusedCrossEntropy` reads the bf16 logits once, in blocks of rows that stay in cache: it
widens a block, takes its log-softmax in float32 (the loss' terms), and writes the gradient,
(softmax - one-hot) / divisor, to bf16 at once; backward only scales it by the incoming gradient,
and not at all when that is exactly 1 (after `loss.backward()`). So the loss and its gradient are
the float32 ones, the gradient rounded to bf16 once, as on the widened path; a block's float32
temporaries are all the extra memory, whatever the vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_ROWS = 64  # rows of logits widened at a time: 64 x 10,000 float32 is 2.5 MB


def summed_cross_entropy(logits: Tensor, targets: Tensor, divisor: int = 1) -> Tensor:
    """sum_i -log softmax(logits_i)[targets_i] / divisor, over logits [N, V] and targets [N], in float32.

    Training divides by the batch size (the seed's loss scale: summed over time, mean over the batch).
    """
    if logits.dtype == torch.float32:
        return F.cross_entropy(logits, targets, reduction="sum") / divisor
    if logits.requires_grad and torch.is_grad_enabled():
        loss: Tensor = _FusedCrossEntropy.apply(logits, targets, divisor)
        return loss
    return _summed_nll(logits, targets, None, divisor) / divisor


def _summed_nll(logits: Tensor, targets: Tensor, grad: Tensor | None, divisor: int) -> Tensor:
    """The summed loss, block by block in float32; fills `grad` with (softmax - one-hot) / divisor when given."""
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    rows = torch.arange(min(BLOCK_ROWS, logits.size(0)), device=logits.device)
    for start in range(0, logits.size(0), BLOCK_ROWS):
        logp = torch.log_softmax(logits[start : start + BLOCK_ROWS].float(), dim=-1)
        n, picked = logp.size(0), targets[start : start + BLOCK_ROWS]
        total -= logp[rows[:n], picked].sum()
        if grad is not None:
            probs = logp.exp_()
            probs[rows[:n], picked] -= 1.0
            grad[start : start + n] = probs.div_(divisor)
    return total


class _FusedCrossEntropy(torch.autograd.Function):
    """Cross entropy of low-precision logits whose gradient is made in the forward pass."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, divisor: int) -> Tensor:
        grad = torch.empty_like(logits)
        total = _summed_nll(logits, targets, grad, divisor)
        ctx.save_for_backward(grad)
        return total / divisor

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        # After `loss.backward()` the incoming gradient is exactly 1: on a CPU (where reading it costs
        # nothing) the saved gradient is the answer as it is, without a pass over [N, V]. Otherwise
        # the float32 scalar multiplies it without a second rounding (bf16 times a float scalar is
        # computed in float32).
        if grad_output.device.type == "cpu" and grad_output.item() == 1.0:
            return grad, None, None
        return grad * grad_output, None, None
