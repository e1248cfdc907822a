"""The training step of pytorch/examples `word_language_model`, rebuilt for a like-for-like timing.

Its `main.py` trains `RNNModel` (Embedding -> Dropout -> nn.LSTM -> Dropout -> Linear -> log_softmax)
on a [T, B] layout with `NLLLoss`, `clip_grad_norm_` and a hand-written SGD update over every
parameter. `train_speed.py` times this step on the same shapes and data as our trainer, so the ratio
it prints is measured on the same machine in the same process.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RNNModel(nn.Module):
    """pytorch/examples' `RNNModel` for `--model LSTM` (untied weights)."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.decoder.out_features)
        return F.log_softmax(decoded, dim=1), hidden


def time_examples_steps(
    ids: Tensor, vocab: int, hidden: int, layers: int, batch: int, bptt: int, steps: int, warmup: int
) -> float:
    """Seconds for `steps` training steps of the examples' loop (after `warmup` untimed ones)."""
    torch.manual_seed(0)
    model = RNNModel(vocab, hidden, hidden, layers, 0.0)
    nbatch = ids.numel() // batch
    data = ids[: nbatch * batch].view(batch, -1).t().contiguous()  # [N/B, B], the examples' batchify
    state = (torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden))
    lr, clip = 20.0, 0.25  # the examples' defaults; they change the values, not the work
    model.train()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        i = step * bptt
        x, y = data[i : i + bptt], data[i + 1 : i + 1 + bptt].reshape(-1)
        model.zero_grad()
        state = (state[0].detach(), state[1].detach())
        output, state = model(x, state)
        loss = F.nll_loss(output, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            if p.grad is not None:
                p.data.add_(p.grad, alpha=-lr)
        loss.item()
    return time.perf_counter() - start
