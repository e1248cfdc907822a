"""Generation for the API: stop sequences, limits, continuous batching and top log-probabilities.

`model.inference.Continuations` does the sampling. A `Generation` reads its prompt and then takes
its steps in the model's decode loop with every other running generation (continuous batching,
`app.inference.batcher.DecodeLoop`), and, when a caller asks for the most likely alternatives at
each position (OpenAI's `logprobs=k`), replays the prompt and the emitted words through the model to
read its full distribution there.

The prompt's context starts at `<eos>`, as every training sentence does: a prompt is the beginning
of a sentence, and an empty prompt starts one from scratch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from app.errors import Invalid
from app.inference.batcher import decode_loop
from app.inference.registry import LoadedModel
from app.settings import Settings
from model.data import EOS
from model.inference import (
    Continuations,
    GeneratedToken,
    decode,
    decode_rows,
    read_prompt,
    score_sentences,
    step_logits,
)
from model.network import State
from model.tokenizers import words_of

FINISH_EOS, FINISH_STOP, FINISH_LENGTH = "eos", "stop", "length"
PROMPT_BLOCK = 256  # echoed prompt positions whose distributions over V exist at once


@dataclass(frozen=True)
class Sampling:
    """How to continue a prompt; validated by the API schemas before it gets here."""

    max_tokens: int = 30
    temperature: float = 1.0  # 0 is greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int = 1
    stop: tuple[tuple[str, ...], ...] = ()  # word sequences that end a continuation (not emitted)
    stop_at_eos: bool = True  # False: <eos> is emitted as a token and the continuation goes on


@dataclass(frozen=True)
class Token:
    """One emitted word of continuation `index`."""

    index: int
    token: str
    logprob: float  # natural log p under the model's own (untempered) distribution
    top: dict[str, float] | None = None  # the k most likely words here (and the chosen one), when asked


@dataclass(frozen=True)
class Finish:
    """Continuation `index` ended: `eos`, `stop` or `length`."""

    index: int
    reason: str


@dataclass(frozen=True)
class PromptToken:
    token: str
    logprob: float | None  # None for the first word (OpenAI's convention)
    top: dict[str, float] | None


def stop_sequences(stop: str | Sequence[str] | None) -> tuple[tuple[str, ...], ...]:
    """A string is one word sequence; a list holds one sequence per string. Empty ones are refused."""
    texts = [stop] if isinstance(stop, str) else list(stop or [])
    sequences = tuple(tuple(words_of(text)) for text in texts)
    if any(not words for words in sequences):
        raise Invalid("stop: a stop sequence needs at least one word")
    return sequences


def check_request(prompt_words: Sequence[object], sampling: Sampling, settings: Settings) -> None:
    """`Invalid` when a request goes over the deployment's limits."""
    if sampling.max_tokens > settings.max_generate_tokens:
        raise Invalid(f"max_tokens: {sampling.max_tokens} is over the limit of {settings.max_generate_tokens}")
    if sampling.n > settings.max_generate_n:
        raise Invalid(f"n: {sampling.n} is over the limit of {settings.max_generate_n}")
    if len(prompt_words) > settings.max_prompt_words:
        raise Invalid(f"prompt: {len(prompt_words)} words, at most {settings.max_prompt_words}")


def _top(logp: Tensor, k: int, words: Sequence[str], chosen: int | None) -> dict[str, float]:
    """The k most likely words of a [V] log-distribution, plus the chosen word (as OpenAI does)."""
    values, ids = torch.topk(logp, min(k, logp.numel()))  # k = 0: only the chosen word
    top = {words[i]: v for i, v in zip(ids.tolist(), values.tolist(), strict=True)}
    if chosen is not None and words[chosen] not in top:
        top[words[chosen]] = float(logp[chosen])
    return top


class Replay:
    """The model's distribution at every position of a prompt and of n continuations of it.

    It reads the words as generation does (the prompt as a sequence, then one fused step per word,
    in the same precision), so a word's log p here is the one its choice was made from.
    """

    def __init__(self, loaded: LoadedModel, prompt_words: Sequence[str], n: int, precision: str = "fp32") -> None:
        self.loaded = loaded
        self.precision = precision
        self.ids = [loaded.vocab.id_of(w) for w in prompt_words]
        model = loaded.model
        with torch.inference_mode(), loaded.lock:
            context = torch.tensor([[loaded.vocab.eos_id, *self.ids]], device=model.decoder.weight.device)
            outputs, state = read_prompt(model, context, keep_outputs=True, precision=precision)
            # [P + 1, H]: the distributions over V are computed block by block when they are read.
            self.prompt_hidden = outputs[0]
            last = torch.log_softmax(decode_rows(model, self.prompt_hidden[-1:], precision)[0], dim=-1)
        self.states: list[State] = [state] * n  # never written in place: sharing is safe
        self.next_logp = [last] * n  # [V] each: the distribution of the next word
        self.pending: list[int | None] = [None] * n  # a word emitted but not yet read

    def prompt(
        self, words: Sequence[str], k: int, starts: bool = False, scored: Sequence[float] | None = None
    ) -> list[PromptToken]:
        """Log p of each prompt word given the words before it, with k alternatives.

        The first word's is None (OpenAI's convention) unless `starts`: then an `<eos>` token comes
        first with None, and every word has its log p. The log-probabilities are `/v1/score`'s
        (`score_sentences`, score_eos off; `scored` when the caller has them from the scoring
        batcher), so both answer the same numbers; the alternatives come from the replay, with the
        token's own entry set to that same number.
        """
        vocab_words = self.loaded.vocab.words
        model = self.loaded.model
        if scored is None:
            scored = []
            if words:
                with self.loaded.lock:
                    scored = score_sentences(
                        model, self.loaded.vocab, [words], score_eos=False, precision=self.precision
                    )[0].logprobs
        out = [PromptToken(EOS, None, None)] if starts else []
        block: Tensor | None = None  # log p over V at positions [start, start + PROMPT_BLOCK)
        start = 0
        for j, (word, token_id) in enumerate(zip(words, self.ids, strict=True)):
            if j == 0 and not starts:
                out.append(PromptToken(word, None, None))
                continue
            if block is None or j >= start + PROMPT_BLOCK:
                start = j
                with torch.inference_mode(), self.loaded.lock:
                    logits = decode(model, self.prompt_hidden[start : start + PROMPT_BLOCK], self.precision)
                    block = torch.log_softmax(logits, dim=-1)  # [<= PROMPT_BLOCK, V]
            top = _top(block[j - start], k, vocab_words, token_id)
            top[vocab_words[token_id]] = scored[j]
            out.append(PromptToken(word, scored[j], top))
        return out

    def step(self, index: int, token_id: int, k: int) -> tuple[float, dict[str, float]]:
        """Log p of continuation `index`'s next word and the k most likely words there."""
        model = self.loaded.model
        pending = self.pending[index]
        if pending is not None:  # read the previous word only now: the last one never needs it
            with torch.inference_mode(), self.loaded.lock:
                x = torch.tensor([pending], device=model.decoder.weight.device)
                logits, self.states[index] = step_logits(model, x, self.states[index], self.precision)
                self.next_logp[index] = torch.log_softmax(logits[0], dim=-1)
        self.pending[index] = token_id
        logp = self.next_logp[index]
        return float(logp[token_id]), _top(logp, k, self.loaded.vocab.words, token_id)


class Generation:
    """A prompt read and ready to continue `sampling.n` times (torch work: build it off the event
    loop). Its words come from the model's decode loop, with every running generation: through
    `events` in a thread, or `event_batches` on the event loop.

    With `top_logprobs` = k (0 included), every word carries the k most likely words at its
    position and the chosen one, with its log p read from the same distribution so the two agree
    exactly. `replay` may be passed when the caller already built it for the prompt (in the same
    `precision`).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        prompt_words: Sequence[str],
        sampling: Sampling,
        *,
        top_logprobs: int | None = None,
        replay: Replay | None = None,
        precision: str = "fp32",
    ) -> None:
        self.loaded, self.top_logprobs, self.precision = loaded, top_logprobs, precision
        with loaded.lock:  # the prompt is read alone; the steps after it with every running generation
            self.continuations = Continuations(
                loaded.model,
                loaded.vocab,
                prompt_words,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                seed=sampling.seed,
                n=sampling.n,
                stop=[list(s) for s in sampling.stop],
                stop_at_eos=sampling.stop_at_eos,
                precision=precision,
            )
        if top_logprobs is not None and replay is None:
            replay = Replay(loaded, prompt_words, sampling.n, precision)
        self.replay = replay

    def events(self) -> Iterator[Token | Finish]:
        """Each word as it is chosen and each end, for a reader in a thread."""
        for event in decode_loop(self.loaded, self.precision).run(self.continuations):
            yield self._with_top(event)

    async def event_batches(self) -> AsyncIterator[list[Token | Finish]]:
        """`events` for a reader on the event loop, in lists: what arrived since the last one. The
        alternatives of `top_logprobs` are read in a worker thread (torch never runs on the loop)."""
        async for batch in decode_loop(self.loaded, self.precision).event_batches(self.continuations):
            if self.replay is not None:
                yield await asyncio.to_thread(self._all_with_top, batch)
            else:
                yield self._all_with_top(batch)

    def _all_with_top(self, events: list[GeneratedToken | tuple[int, str]]) -> list[Token | Finish]:
        return [self._with_top(event) for event in events]

    def _with_top(self, event: GeneratedToken | tuple[int, str]) -> Token | Finish:
        if isinstance(event, tuple):
            return Finish(event[0], event[1])
        if self.top_logprobs is not None and self.replay is not None:
            logprob, top = self.replay.step(event.index, self.loaded.vocab.id_of(event.token), self.top_logprobs)
            return Token(event.index, event.token, logprob, top)
        return Token(event.index, event.token, event.logprob)
