"""The training loss: float32 logits give `F.cross_entropy`'s numbers bit for bit; bf16 logits give
the float32 loss of the widened logits and the gradient of the autocast path (float32 softmax minus
one-hot, rounded to bf16), block by block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.loss import BLOCK_ROWS, summed_cross_entropy

ROWS = 2 * BLOCK_ROWS + 22  # three blocks, the last one short


def logits_and_targets(dtype: torch.dtype, rows: int = ROWS, vocab: int = 997) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    logits = (torch.randn(rows, vocab, generator=generator) * 4).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    return logits, targets


def loss_and_grad(fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    leaf = logits.clone().requires_grad_()
    loss = fn(leaf, targets)
    loss.backward()
    assert leaf.grad is not None
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("divisor", [1, 20])
def test_float32_is_cross_entropy_bit_for_bit(divisor: int) -> None:
    logits, targets = logits_and_targets(torch.float32)
    ours = loss_and_grad(lambda x, y: summed_cross_entropy(x, y, divisor), logits, targets)
    reference = loss_and_grad(lambda x, y: F.cross_entropy(x, y, reduction="sum") / divisor, logits, targets)
    assert torch.equal(ours[0], reference[0])
    assert torch.equal(ours[1], reference[1])


@pytest.mark.parametrize("divisor", [1, 20])
def test_bf16_matches_the_widened_autocast_path(divisor: int) -> None:
    logits, targets = logits_and_targets(torch.bfloat16)
    loss, grad = loss_and_grad(lambda x, y: summed_cross_entropy(x, y, divisor), logits, targets)
    ref_loss, ref_grad = loss_and_grad(
        lambda x, y: F.cross_entropy(x.float(), y, reduction="sum") / divisor, logits, targets
    )
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    # Both are a float32 gradient rounded to bf16: at most one bf16 rounding step (2^-8 relative) apart.
    assert torch.allclose(grad.float(), ref_grad.float(), rtol=2**-8, atol=1e-9)
    assert grad.float().sum(dim=1).abs().max().item() < 1e-2 / divisor  # softmax minus one-hot sums to 0


def test_bf16_without_grad_is_the_same_loss() -> None:
    logits, targets = logits_and_targets(torch.bfloat16)
    with torch.no_grad():
        plain = summed_cross_entropy(logits, targets, 20)
    assert torch.equal(plain, loss_and_grad(lambda x, y: summed_cross_entropy(x, y, 20), logits, targets)[0])


def test_bf16_scales_by_the_incoming_gradient() -> None:
    logits, targets = logits_and_targets(torch.bfloat16, rows=10)
    once = loss_and_grad(lambda x, y: summed_cross_entropy(x, y), logits, targets)[1]
    thrice = loss_and_grad(lambda x, y: 3 * summed_cross_entropy(x, y), logits, targets)[1]
    assert torch.allclose(thrice.float(), 3 * once.float(), rtol=2**-7)
