"""Which precision answers an inference request: the request's own choice, else the server's setting.

`fp32` computes everything in float32; `bf16` runs the LSTM and the softmax layer's product in
bfloat16 with float32 log-softmax and sums (see `model.inference`). A request that names bf16 on a
machine without bf16 support is refused; a server whose setting says bf16 on such a machine serves
fp32, and every answer says which precision computed it.
"""

from __future__ import annotations

from functools import cache

import torch

from app.errors import Invalid
from app.settings import Settings
from model.network import supported_precisions


@cache
def offered_precisions(device: str) -> tuple[str, ...]:
    """What `device` can compute in, asked of torch once per process (the hardware does not change)."""
    return tuple(supported_precisions(torch.device(device)))


def request_precision(requested: str | None, settings: Settings, device: str) -> str:
    """The precision to compute a request in on `device`; `Invalid` when it asks for one the device lacks."""
    offered = offered_precisions(device)
    if requested is None:
        return settings.inference_precision if settings.inference_precision in offered else "fp32"
    if requested not in offered:
        raise Invalid(
            f"precision: {requested!r} is not supported by this server's {device} "
            f"(it supports {', '.join(p for p in offered if p != 'tf32')})",
            field="precision",
        )
    return requested
