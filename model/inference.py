"""Scoring and generation with a trained model.

Every sentence starts from a fresh zero state with `<eos>` as its context, so a sentence's numbers
never depend on what else is in the batch: padding goes after the last real token, where a
left-to-right LSTM cannot see it.

Precision: `fp32` computes everything in float32. `bf16` runs the LSTM under bf16 autocast and the
softmax layer's product (three quarters of the FLOPs) in bf16 with a bf16 copy of its weight, made
once per model; in scoring the exponentials are bf16 too, summed with float32 accumulation into a
normaliser rounded to bf16, and the log-probabilities and every total are float32.
The products run in fixed-shape blocks, so in bf16 too a sentence's numbers do not depend on its
neighbours.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from model.data import UNK, Vocabulary
from model.network import LSTMLanguageModel, State, autocast
from model.train import perplexity

INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")  # what scoring and generation can compute in


@dataclass(frozen=True)
class SentenceScore:
    tokens: list[str]  # the scored tokens (with the final <eos> when it is scored)
    logprobs: list[float]  # natural log p(token | prefix), one per token
    is_unk: list[bool]  # the token was mapped to <unk> (or is <unk>)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def total_logprob(self) -> float:
        return math.fsum(self.logprobs)

    @property
    def perplexity(self) -> float:
        return perplexity(-self.total_logprob, self.num_tokens) if self.tokens else math.nan


SOFTMAX_ROWS = 128  # positions per softmax block: a [128, V] block of logits stays in cache
SOFTMAX_QUEUE_ROWS = 64 * SOFTMAX_ROWS  # top-layer rows a scoring call holds before their softmax
# bf16 LSTM batches of more than 32 rows are padded to a multiple of 32: oneDNN's AMX kernels run
# some other row counts (61, 93, ...) at a third of their speed; a few padding rows cost far less.
BF16_LSTM_ROWS = 32
LSTM_ROWS = 8  # every LSTM batch is a whole number of 8-row tiles (batch invariance: see `packed_hidden`)
AMX = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())  # Intel's matrix tiles (bf16 AMX)

# model -> (the float32 decoder weight it was made from, that weight's version, its bf16 copy)
_BF16_DECODERS: weakref.WeakKeyDictionary[LSTMLanguageModel, tuple[Tensor, int, Tensor]] = weakref.WeakKeyDictionary()


def check_inference_precision(precision: str) -> None:
    """`ValueError` unless scoring and generation can compute in `precision`."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")


def decoder_weight(model: LSTMLanguageModel, precision: str) -> Tensor:
    """The softmax weight [V, H] in the dtype `precision` computes its product in.

    bf16: a copy made on first use and kept while the model lives (casting [V, H] on every call
    would cost more than the product it speeds up); remade if the weight changes.
    """
    weight = model.decoder.weight
    if precision != "bf16":
        return weight
    version = _version(weight)
    cached = _BF16_DECODERS.get(model)
    if cached is not None and cached[0] is weight and cached[1] == version:
        return cached[2]
    low = weight.detach().to(torch.bfloat16)
    _BF16_DECODERS[model] = (weight, version, low)
    return low


def _version(tensor: Tensor) -> int:
    """The in-place write counter; -1 for tensors made under inference mode, which do not keep one."""
    try:
        return int(tensor._version)
    except RuntimeError:
        return -1


def decode(model: LSTMLanguageModel, hidden: Tensor, precision: str = "fp32") -> Tensor:
    """Float32 logits [..., V] of top-layer outputs [..., H]; in bf16 the product is bf16, the bias added in fp32."""
    if precision != "bf16":
        return model.decoder(hidden.float())
    weight = decoder_weight(model, precision)
    if hidden.numel() == hidden.size(-1) and hidden.device.type == "cpu" and AMX:
        # One row (generation at batch 1) on a CPU with AMX: oneDNN's single-row matrix product is
        # slow there (590 us), a matrix-vector product takes 375 us; elsewhere the product is the
        # faster one (AVX512-BF16 without AMX: 190 us against 340 us for `mv`).
        scores = torch.mv(weight, hidden.reshape(-1).to(torch.bfloat16)).reshape(*hidden.shape[:-1], -1)
    else:
        scores = hidden.to(torch.bfloat16) @ weight.t()
    return scores.float() + model.decoder.bias


def logits_of(model: LSTMLanguageModel, x: Tensor, state: State, precision: str = "fp32") -> tuple[Tensor, State]:
    """Float32 logits [B, T, V] for ids [B, T] and the final state: `model(x, state)` in `precision`."""
    with autocast(x.device, precision):
        out, state = model.hidden(x, state)
    return decode(model, out, precision), state


MAX_LENGTH_SPREAD = 1.5  # a scoring group's longest sentence is at most 1.5x its shortest (+ 2)
# The LSTM's cost of a group, in padded positions: each call has a fixed cost (its weights laid out
# for the kernels, the tensors built) of about 100 positions, each time step about 6 more, whatever
# the rows. Measured on a 2-core x86 CPU, small preset: they decide how sentences are grouped only.
LSTM_CALL_COST, LSTM_STEP_COST = 100, 6
PLANNED_SENTENCES = 512  # up to this many sentences are grouped at the least cost; more by length bands


def lstm_rows(count: int, precision: str) -> int:
    """The rows `packed_hidden` computes for `count` sentences: whole tiles (see there)."""
    tile = BF16_LSTM_ROWS if precision == "bf16" and count > BF16_LSTM_ROWS else LSTM_ROWS
    return count + (-count % tile)


def _full_sizes(most: int, precision: str) -> set[int]:
    """The group sizes up to `most` that fill their LSTM tiles (`lstm_rows(size) == size`)."""
    if precision != "bf16":
        return set(range(LSTM_ROWS, most + 1, LSTM_ROWS))
    small = range(LSTM_ROWS, min(most, BF16_LSTM_ROWS) + 1, LSTM_ROWS)
    return {*small, *range(2 * BF16_LSTM_ROWS, most + 1, BF16_LSTM_ROWS)}


def scoring_groups(lengths: Sequence[int], batch_size: int, batch_tokens: int, precision: str) -> list[int]:
    """Where the groups of sorted `lengths` end: consecutive ranges, each one LSTM call of at most
    `batch_size` sentences and `batch_tokens` positions (or one sentence).

    Up to `PLANNED_SENTENCES` sentences, the grouping of least cost: a group of r sentences whose
    longest has T tokens costs `LSTM_CALL_COST + T * (LSTM_STEP_COST + lstm_rows(r))`. In such a
    grouping every group but the shortest fills its tiles (a padding row of a group could take the
    longest sentence of the group before it at no cost to either), so only those sizes are tried.
    Past that, groups of close lengths (`MAX_LENGTH_SPREAD`). Where a sentence is scored never
    changes its numbers (`packed_hidden`), only the time.
    """
    count = len(lengths)
    ends: list[int] = []
    if count > PLANNED_SENTENCES:
        start = 0
        while start < count:
            end, shortest = start + 1, lengths[start]
            while end < count and end - start < batch_size:
                length = lengths[end]
                if (end - start + 1) * length > batch_tokens or length > shortest * MAX_LENGTH_SPREAD + 2:
                    break
                end += 1
            ends.append(end)
            start = end
        return ends

    def cost(start: int, end: int) -> float:
        return LSTM_CALL_COST + lengths[end - 1] * (LSTM_STEP_COST + lstm_rows(end - start, precision))

    best: list[float] = [0.0] + [math.inf] * count  # best[j]: the least cost of the first j sentences
    cut = [0] * (count + 1)  # where the last group of that grouping starts
    for end in range(1, count + 1):
        most = min(end, batch_size, max(1, batch_tokens // lengths[end - 1]))
        if end <= most:  # all in one group: the shortest group may leave tiles part empty
            best[end], cut[end] = cost(0, end), 0
        for size in _full_sizes(most, precision) | {most}:
            if size < end and best[end - size] + cost(end - size, end) < best[end]:
                best[end], cut[end] = best[end - size] + cost(end - size, end), end - size
    end = count
    while end > 0:
        ends.append(end)
        end = cut[end]
    return ends[::-1]


@torch.inference_mode()
def score_sentences(
    model: LSTMLanguageModel,
    vocab: Vocabulary,
    sentences: Sequence[Sequence[str]],
    *,
    score_eos: bool = True,
    batch_size: int = 512,
    batch_tokens: int = 8192,
    precision: str = "fp32",
) -> list[SentenceScore]:
    """Per-token log-probabilities of tokenised sentences, each from a fresh state.

    Sentences are sorted by length and scored in groups of consecutive lengths (`scoring_groups`),
    at most `batch_size` sentences and `batch_tokens` padded positions each; the softmax runs only
    at real positions.
    The result keeps the input order. A sentence with nothing to score (empty, with
    `score_eos=False`) gets an empty score; with `score_eos` an empty sentence is its `<eos>`.
    `precision` is fp32 or bf16 (see the module docstring).
    """
    check_inference_precision(precision)
    model.eval()
    device = model.decoder.weight.device
    eos = vocab.eos_id
    targets: list[list[int]] = []
    for words in sentences:
        targets.append([vocab.id_of(w) for w in words] + ([eos] if score_eos else []))
    unk_id = vocab.unk_id
    results: list[SentenceScore | None] = [
        None if ids else SentenceScore(tokens=[], logprobs=[], is_unk=[]) for ids in targets
    ]
    order = sorted((i for i in range(len(targets)) if targets[i]), key=lambda i: len(targets[i]))
    queue, scored = _SoftmaxQueue(model, precision), []
    start = 0
    for end in scoring_groups([len(targets[i]) for i in order], batch_size, batch_tokens, precision):
        group, start = order[start:end], end
        lengths = [len(targets[i]) for i in group]
        # inputs: <eos> then the targets shifted right; padding (<eos>) after each sentence's end
        y = torch.full((len(group), lengths[-1]), eos, dtype=torch.long)
        for row, i in enumerate(group):
            y[row, : lengths[row]] = torch.tensor(targets[i])
        x = torch.cat([torch.full((len(group), 1), eos, dtype=torch.long), y[:, :-1]], dim=1)
        queue.add(*packed_hidden(model, x.to(device), y.to(device), torch.tensor(lengths, device=device), precision))
        scored += group
    values, offset = queue.finish(), 0  # the real positions, sentence after sentence
    for i in scored:
        n = len(targets[i])
        words = list(sentences[i]) + (["<eos>"] if score_eos else [])
        results[i] = SentenceScore(
            tokens=words,
            logprobs=values[offset : offset + n],
            is_unk=[t == unk_id or w not in vocab for t, w in zip(targets[i], words, strict=True)],
        )
        offset += n
    return [r for r in results if r is not None]


def packed_hidden(
    model: LSTMLanguageModel, x: Tensor, y: Tensor, lengths: Tensor, precision: str = "fp32"
) -> tuple[Tensor, Tensor]:
    """Top-layer outputs [N, H] from a zero state at the real positions t < lengths[b], row by row,
    and their targets [N].

    The batch is padded with rows of length 0 to a multiple of `LSTM_ROWS` (in bf16, past
    `BF16_LSTM_ROWS` rows, of that): the LSTM's products then never take the kernels of a partial
    row tile, whose roundings differ, so a row's numbers do not depend on how many rows came with it.
    """
    rows = BF16_LSTM_ROWS if precision == "bf16" and x.size(0) > BF16_LSTM_ROWS else LSTM_ROWS
    if x.size(0) % rows:
        pad = -x.size(0) % rows
        x, y = (torch.cat([t, t.new_zeros(pad, t.size(1))]) for t in (x, y))
        lengths = torch.cat([lengths, lengths.new_zeros(pad)])
    with autocast(x.device, precision):
        out, _ = model.hidden(x, model.zero_state(x.size(0)))  # [B, T, H]
    real = torch.arange(x.size(1), device=x.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    return out[real], y[real]


def softmax_logprobs(model: LSTMLanguageModel, hidden: Tensor, target: Tensor, precision: str = "fp32") -> Tensor:
    """log p(target[i] | hidden[i]) for top-layer outputs [N, H]: [N], in blocks of `SOFTMAX_ROWS` rows.

    The decoder and the softmax are three quarters of the FLOPs and most of the memory traffic. The
    normaliser of logits l = hW' + c is computed as exp(hW') . exp(c), one pass over each block
    while it is in cache instead of the max, subtract, exp and sum passes of a log-sum-exp; rows
    where that could lose precision (sum outside [1e-30, 1e30]) take the max-shifted way.

    The last block is padded to whole 8-row tiles (`LSTM_ROWS`; in bf16 to a whole block, so that
    every bf16 product has the shape [SOFTMAX_ROWS, H] x [H, V]): a row's numbers never depend on
    how many rows came with it (a partial tile would take other kernels, with other roundings). In
    bf16 the exponentials are bf16, the normaliser accumulates in float32 and is rounded to bf16,
    the rest is float32.
    """
    count = target.numel()
    weight, bias = decoder_weight(model, precision), model.decoder.bias
    low = precision == "bf16"
    if low:
        hidden = hidden.to(torch.bfloat16)
    tile = SOFTMAX_ROWS if low else LSTM_ROWS
    hidden = torch.cat([hidden, hidden.new_zeros((-count) % tile, hidden.size(1))])  # whole tiles
    exp_bias = bias.exp()  # [V]
    exp_bias_low = exp_bias.to(torch.bfloat16).unsqueeze(1)  # [V, 1]: a product, 2x faster than bf16 `mv`
    logprobs = torch.empty(count, device=hidden.device)
    for start in range(0, count, SOFTMAX_ROWS):
        end = min(start + SOFTMAX_ROWS, count)
        block = hidden[start : start + SOFTMAX_ROWS]  # always SOFTMAX_ROWS rows
        scores = block @ weight.t()  # [rows, V], logits without the bias
        if low:
            # bf16 exponentials, summed by a bf16 product that accumulates in float32: the normaliser
            # is rounded once, to bf16's 3 significant digits (at most 0.004 in its log)
            chosen = scores[: end - start].gather(1, target[start:end].unsqueeze(1)).squeeze(1).float()
            chosen += bias[target[start:end]]
            norm = (scores.exp_() @ exp_bias_low)[: end - start, 0].float()  # the whole block: same shape
        else:
            chosen = (
                scores[: end - start].gather(1, target[start:end].unsqueeze(1)).squeeze(1) + bias[target[start:end]]
            )
            norm = torch.mv(scores.exp_(), exp_bias)[: end - start]  # sum_v exp(logit_v), the whole block
        logprobs[start:end] = chosen - norm.log()
        unsafe = ~((norm > 1e-30) & (norm < 1e30))  # NaN included
        if unsafe.any():
            index = torch.arange(start, end, device=hidden.device)[unsafe]
            # the same block product again, so the row's numbers stay those of its block shape
            logits = (block @ weight.t())[: end - start][unsafe].float() + bias
            logprobs[index] = logits.gather(1, target[index].unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=1)
    return logprobs


class _SoftmaxQueue:
    """Top-layer rows waiting for the softmax: they run in whole blocks as they come, the rest at the end.

    The groups of a scoring call share blocks, so only the call's last block is short (in bf16,
    padded). Rows run once `SOFTMAX_QUEUE_ROWS` of them wait, so the rows held stay bounded (by
    that and one group's) whatever the call's size.
    """

    def __init__(self, model: LSTMLanguageModel, precision: str) -> None:
        self.model, self.precision = model, precision
        self.hidden: list[Tensor] = []
        self.target: list[Tensor] = []
        self.waiting = 0
        self.logprobs: list[float] = []  # the rows' results, in the order they came

    def add(self, hidden: Tensor, target: Tensor) -> None:
        self.hidden.append(hidden)
        self.target.append(target)
        self.waiting += target.numel()
        if self.waiting >= SOFTMAX_QUEUE_ROWS:
            self._run(final=False)

    def finish(self) -> list[float]:
        if self.waiting:
            self._run(final=True)
        return self.logprobs

    def _run(self, final: bool) -> None:
        hidden, target = torch.cat(self.hidden), torch.cat(self.target)
        ready = self.waiting if final else self.waiting - self.waiting % SOFTMAX_ROWS
        self.logprobs += softmax_logprobs(self.model, hidden[:ready], target[:ready], self.precision).tolist()
        self.hidden, self.target, self.waiting = [hidden[ready:]], [target[ready:]], self.waiting - ready


PROMPT_CHUNK = 1024  # prompt positions read per LSTM call: its workspace stays [1024, 4H] per layer


def read_prompt(
    model: LSTMLanguageModel, context: Tensor, *, keep_outputs: bool, precision: str = "fp32"
) -> tuple[Tensor, State]:
    """Read ids [1, P] from a zero state in chunks of `PROMPT_CHUNK`, the state carried between them,
    the LSTM in `precision`.

    Returns the top-layer outputs [1, P, H] (only the last position, [1, 1, H], when `keep_outputs`
    is False) and the final state: memory grows with P by H floats a position at most, never by V.
    """
    state = model.zero_state(1)
    outputs: list[Tensor] = []
    out = context.new_zeros((1, 0, model.hidden_size), dtype=model.decoder.weight.dtype)
    for start in range(0, context.size(1), PROMPT_CHUNK):
        with autocast(context.device, precision):
            out, state = model.hidden(context[:, start : start + PROMPT_CHUNK], state)
        if keep_outputs:
            outputs.append(out)
    if keep_outputs:
        return torch.cat(outputs, dim=1), state
    return out[:, -1:], state


def token_logprobs(model: LSTMLanguageModel, x: Tensor, y: Tensor) -> Tensor:
    """log p(y[b, t] | x[b, :t+1]) for ids [B, T], from a zero state: [B, T]."""
    logits, _ = model(x, model.zero_state(x.size(0)))  # [B, T, V]
    return logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@dataclass
class Generation:
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # model log p of each chosen token
    finish_reason: str | None = None  # "eos", "stop" (a stop sequence) or "length"


@dataclass(frozen=True)
class GeneratedToken:
    index: int  # which of the n continuations
    token: str
    logprob: float


NUCLEUS_CANDIDATES = 2048  # top-p sorts the most likely words first; the nucleus is nearly always among them


def _filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Mask everything outside the top-k and the top-p nucleus with -inf. logits: [n, V]."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        # A partial sort (top-k) instead of sorting all V words: 5x cheaper at V = 10,000, and
        # the same set, since every word past a prefix that reaches top_p is dropped anyway. A flat
        # distribution (an untrained model) needs the full sort.
        top, idx = torch.topk(probs, min(NUCLEUS_CANDIDATES, probs.size(-1)), dim=-1)  # [n, k], descending
        cum = top.cumsum(dim=-1)
        if not bool((cum[:, -1] >= top_p).all()):
            top, idx = torch.sort(probs, dim=-1, descending=True)
            cum = top.cumsum(dim=-1)
        keep = cum - top < top_p  # the smallest set reaching top_p
        drop = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, idx, ~keep)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def _sample(probs: Tensor, generator: torch.Generator) -> Tensor:
    """One draw from each row of probs [n, V] by inverting its CDF: one uniform number per row
    where `torch.multinomial` draws V exponentials (0.4 ms a token at V = 10,000 on a CPU)."""
    cdf = probs.double().cumsum(dim=-1)  # [n, V]
    u = torch.rand(probs.size(0), 1, generator=generator, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    # right=True: the first word whose CDF exceeds u, so a zero-probability word is never drawn
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.size(-1) - 1)


def step_logits(model: LSTMLanguageModel, ids: Tensor, state: State, precision: str = "fp32") -> tuple[Tensor, State]:
    """Float32 logits [n, V] after reading one token per row (ids [n]): `model` in eval mode, one time step.

    The same function as `model(ids[:, None], state)`, with the fused cell per layer: for a single
    step it skips the sequence kernel's per-call setup (0.5 ms on a CPU, most of a token's latency).
    The cell has no bf16 kernel on a CPU and is a small part of a step: it stays float32, and
    `precision` applies to the softmax layer's product.
    """
    rows = ids.size(0)
    pad = -rows % LSTM_ROWS  # whole 8-row tiles: a row's numbers never depend on the rows beside it
    if pad:
        ids = torch.cat([ids, ids.new_zeros(pad)])
        state = tuple(torch.cat([s, s.new_zeros(s.size(0), pad, s.size(2))], dim=1) for s in state)  # type: ignore[assignment]
    x = model.embedding(ids)  # [n, H]
    h, c = [], []
    for layer in range(model.num_layers):
        weights = [getattr(model.lstm, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h_l, c_l = torch.lstm_cell(x, (state[0][layer], state[1][layer]), *weights)
        h.append(h_l[:rows])
        c.append(c_l[:rows])
        x = h_l
    return decode(model, x, precision)[:rows], (torch.stack(h), torch.stack(c))


def decode_rows(model: LSTMLanguageModel, hidden: Tensor, precision: str = "fp32") -> Tensor:
    """`decode` of hidden rows [n, H] padded to whole `LSTM_ROWS` tiles, as every generation step is."""
    rows = hidden.size(0)
    pad = -rows % LSTM_ROWS
    if pad:
        hidden = torch.cat([hidden, hidden.new_zeros(pad, hidden.size(1))])
    return decode(model, hidden, precision)[:rows]


def _check_sampling(max_tokens: int, temperature: float, top_k: int | None, top_p: float | None, n: int) -> None:
    if max_tokens < 0:
        raise ValueError("max_tokens must be >= 0")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError("temperature must be a finite number >= 0")
    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be >= 1")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError("top_p must be in (0, 1]")
    if n < 1:
        raise ValueError("n must be >= 1")


class Continuations:
    """The n continuations of one prompt, one step at a time: `choose` picks every active row's next
    token from the logits of its last step and says what happened; the caller reads the chosen
    tokens (`step_logits`, alone or batched with other continuations' rows) and hands the result to
    `advance`. `generate_stream` runs it alone; a server's decode loop runs many together.

    Temperature 0 is greedy; a seed makes sampling repeatable (each `Continuations` has its own
    generator, so its draws never depend on what it is batched with). A stop sequence is not
    emitted: tokens are held back while they could still be the start of one. `precision` (fp32 or
    bf16) applies to reading the prompt and to the softmax layer's product at every step.
    """

    @torch.no_grad()
    def __init__(
        self,
        model: LSTMLanguageModel,
        vocab: Vocabulary,
        prompt: Sequence[str],
        *,
        max_tokens: int = 30,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        n: int = 1,
        stop: Sequence[Sequence[str]] = (),
        stop_at_eos: bool = True,
        precision: str = "fp32",
    ) -> None:
        _check_sampling(max_tokens, temperature, top_k, top_p, n)
        check_inference_precision(precision)
        model.eval()
        self.model, self.vocab, self.n, self.precision = model, vocab, n, precision
        self.temperature, self.top_k, self.top_p, self.stop_at_eos = temperature, top_k, top_p, stop_at_eos
        device = model.decoder.weight.device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
        self.stops = [list(s) for s in stop if len(s) > 0]
        # Read the prompt once (context starts at <eos>), then copy its state to the n rows. Only the
        # last position's logits are needed: the [P+1, V] logits of the whole prompt never exist.
        context = torch.tensor([[vocab.eos_id] + [vocab.id_of(w) for w in prompt]], device=device)  # [1, P+1]
        top, (h, c) = read_prompt(model, context, keep_outputs=False, precision=precision)
        self.last = decode_rows(model, top[:, -1], precision).expand(n, -1)  # [n, V]
        self.state: State = (h.expand(-1, n, -1).contiguous(), c.expand(-1, n, -1).contiguous())
        self.active = list(range(n))
        self.steps_left = max_tokens
        self.pending: list[list[GeneratedToken]] = [[] for _ in range(n)]  # held back: may start a stop sequence

    @property
    def done(self) -> bool:
        return not self.active

    @torch.no_grad()
    def choose(self) -> tuple[list[GeneratedToken | tuple[int, str]], Tensor | None]:
        """The next token of every active row: the events it makes (tokens released, ends) and the
        ids to read next for all n rows (finished rows too: cheaper than reshaping), or None when
        every continuation has ended."""
        events: list[GeneratedToken | tuple[int, str]] = []
        if self.steps_left == 0:  # max_tokens reached
            for i in self.active:
                events += [*self.pending[i], (i, "length")]
            self.active = []
            return events, None
        self.steps_left -= 1
        vocab, stops = self.vocab, self.stops
        logp = torch.log_softmax(self.last.float(), dim=-1)  # [n, V] the model's own distribution
        if self.temperature == 0:
            choice = logp.argmax(dim=-1)
        else:
            probs = torch.softmax(_filter_logits(self.last.float() / self.temperature, self.top_k, self.top_p), dim=-1)
            choice = _sample(probs, self.generator)
        chosen = choice.tolist()
        chosen_lp = logp.gather(-1, choice.unsqueeze(-1)).squeeze(-1).tolist()
        still: list[int] = []
        for i in self.active:
            token = vocab.words[chosen[i]]
            if self.stop_at_eos and chosen[i] == vocab.eos_id:
                events += [*self.pending[i], (i, "eos")]
                continue
            self.pending[i].append(GeneratedToken(i, token, chosen_lp[i]))
            words = [t.token for t in self.pending[i]]
            if any(words[-len(s) :] == s for s in stops if len(words) >= len(s)):
                matched = max((s for s in stops if words[-len(s) :] == s), key=len)
                events += [*self.pending[i][: len(words) - len(matched)], (i, "stop")]
                continue
            # Release the tokens that can no longer begin any stop sequence.
            keep = max(
                (k for s in stops for k in range(1, min(len(s), len(words)) + 1) if words[-k:] == s[:k]),
                default=0,
            )
            release = len(self.pending[i]) - keep
            events += self.pending[i][:release]
            self.pending[i] = self.pending[i][release:]
            still.append(i)
        self.active = still
        if not still:
            return events, None
        if self.steps_left == 0:  # nothing more will be chosen: end now, without another step
            for i in still:
                events += [*self.pending[i], (i, "length")]
            self.active = []
            return events, None
        return events, choice

    def advance(self, last: Tensor, state: State) -> None:
        """The logits [n, V] and state after reading the chosen ids."""
        self.last, self.state = last, state


@torch.no_grad()
def generate_stream(
    model: LSTMLanguageModel, vocab: Vocabulary, prompt: Sequence[str], **options: Any
) -> Iterator[GeneratedToken | tuple[int, str]]:
    """Continue `prompt` n times, yielding each token as it is chosen, and `(index, finish_reason)`
    once per continuation when it ends (see `Continuations` for the options)."""
    continuations = Continuations(model, vocab, prompt, **options)
    while True:
        events, choice = continuations.choose()
        yield from events
        if choice is None:
            return
        continuations.advance(*step_logits(model, choice, continuations.state, continuations.precision))


def generate(model: LSTMLanguageModel, vocab: Vocabulary, prompt: Sequence[str], **options: object) -> list[Generation]:
    """All n continuations at once (see `generate_stream` for the options)."""
    n = int(options.get("n", 1))  # type: ignore[call-overload]
    results = [Generation() for _ in range(n)]
    for event in generate_stream(model, vocab, prompt, **options):
        if isinstance(event, GeneratedToken):
            results[event.index].tokens.append(event.token)
            results[event.index].logprobs.append(event.logprob)
        else:
            results[event[0]].finish_reason = event[1]
    return results


__all__ = [
    "INFERENCE_PRECISIONS",
    "UNK",
    "Continuations",
    "GeneratedToken",
    "Generation",
    "SentenceScore",
    "generate",
    "generate_stream",
    "score_sentences",
]
