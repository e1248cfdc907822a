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


class ExamplesLoop:
    """The examples' training loop on our batches, run a few steps at a time (alternating with others)."""

    def __init__(self, ids: Tensor, vocab: int, hidden: int, layers: int, batch: int, bptt: int) -> None:
        torch.manual_seed(0)
        self.model = RNNModel(vocab, hidden, hidden, layers, 0.0)
        nbatch = ids.numel() // batch
        self.data = ids[: nbatch * batch].view(batch, -1).t().contiguous()  # [N/B, B], the examples' batchify
        self.state = (torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden))
        self.bptt = bptt
        self.step = 0

    def run(self, steps: int) -> float:
        """Seconds for the next `steps` training steps."""
        model, lr, clip = self.model, 20.0, 0.25  # the examples' defaults; they change the values, not the work
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            i = self.step * self.bptt
            if i + 1 + self.bptt > self.data.size(0):  # wrap around at the end of the data
                self.step, i = 0, 0
            x, y = self.data[i : i + self.bptt], self.data[i + 1 : i + 1 + self.bptt].reshape(-1)
            model.zero_grad()
            self.state = (self.state[0].detach(), self.state[1].detach())
            output, self.state = model(x, self.state)
            loss = F.nll_loss(output, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                if p.grad is not None:
                    p.data.add_(p.grad, alpha=-lr)
            loss.item()
            self.step += 1
        return time.perf_counter() - start
