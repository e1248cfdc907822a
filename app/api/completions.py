"""Route: `POST /v1/completions`, OpenAI's legacy completions API over the word-level models.

What OpenAI clients and evaluation tools rely on works as they expect:

- `echo=true, max_tokens=0, logprobs=k` returns the prompt's token log-probabilities, the first one
  `null` (OpenAI's convention; the model does define p(w1 | <eos>), /v1/score reports it);
- a completion's text starts with a space when it continues a prompt that does not end in one, so
  `prompt + text` reads right; tokens are words; `text_offset` counts characters from the start of
  the prompt, echoed or not;
- `finish_reason` is `stop` for a stop sequence or the end of the sentence, `length` otherwise;
- a prompt may be token ids (`POST /tokenize` gives them), a list of ids or a list of such lists;
- a prompt that starts with `<eos>` (evaluation clients put the end-of-text token before a text)
  reads it as the start-of-sentence context every prompt has, not as a word: it is echoed as a
  token with a `null` log-probability, and the first word then has its log-probability;
- with `echo=true` the end of a sentence does not end a continuation: a model that cannot stop
  generates `<eos>` as a token like any other, so the answer always has `max_tokens` generated
  tokens unless a stop sequence ends it (lm-evaluation-harness asks for one token and drops the
  last entry); without echo, `<eos>` ends the continuation with `finish_reason: stop`;
- the echoed log-probabilities are `/v1/score`'s for the same words;
- `stream=true` sends `text_completion` chunks and `data: [DONE]`; `stream_options.include_usage`
  adds a last chunk with the usage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session, sessionmaker

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import BatchersDep, InferenceSlotsDep, ObservabilityDep, SessionsDep, SettingsDep
from app.api.generation import STREAM_RESPONSES, event_stream, new_id
from app.api.inference_schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ModelPath,
    ScopedCompletionRequest,
    Usage,
)
from app.api.models import ModelCacheDep, serve_model
from app.api.schemas import INFERENCE_PROBLEMS, problem_responses
from app.auth.principal import Principal
from app.errors import Invalid
from app.inference.batcher import Batchers
from app.inference.generation import (
    FINISH_EOS,
    FINISH_STOP,
    Finish,
    Generation,
    Replay,
    Sampling,
    Token,
    check_request,
)
from app.inference.precision import request_precision
from app.inference.registry import LoadedModel, ModelCache, same_model
from app.inference.slots import Slot, Slots
from app.inference.text import decode, split_start, word_offsets
from app.observability.prometheus import Observability
from app.settings import Settings
from model.inference import SentenceScore
from model.tokenizers import Tokenizer, words_of

Scorer = Callable[[Sequence[Sequence[str]]], list[SentenceScore]]  # the scoring batcher, for echoed prompts

router = APIRouter(prefix="/v1", tags=["openai"], responses=AUTH_RESPONSES)
scoped_router = APIRouter(tags=["openai"], responses=AUTH_RESPONSES)


class PromptCompletions:
    """The n completions of one prompt as pieces: the echoed prompt, each word, each end.

    Streaming sends every piece as a chunk; the whole response joins the pieces of each choice.
    """

    def __init__(
        self,
        prompt: str,
        starts: bool,
        words: list[str],
        first_index: int,
        body: CompletionRequest,
        tokenizer: Tokenizer,
    ) -> None:
        self.prompt, self.starts, self.words, self.first_index = prompt, starts, words, first_index
        self.tokenizer = tokenizer  # how generated tokens are written as text
        self.generated: list[list[str]] = [[] for _ in range(body.n)]
        self.k = body.logprobs  # None: no logprobs at all
        self.echo = body.echo
        self.separator = "" if not prompt or prompt[-1].isspace() else " "
        self.length = [len(prompt)] * body.n  # characters of prompt + completion so far, per choice
        self.emitted = [0] * body.n

    def _logprobs(
        self, tokens: list[str], lps: list[float | None], tops: list[dict[str, float] | None], offsets: list[int]
    ) -> CompletionLogprobs | None:
        if self.k is None:
            return None
        return CompletionLogprobs(tokens=tokens, token_logprobs=lps, top_logprobs=tops, text_offset=offsets)

    def echoed(self, replay: Replay | None, scorer: Scorer) -> CompletionLogprobs | None:
        """The log-probabilities of the prompt's words (echo=true), when asked for: scored by the
        scoring batcher with every other request's sentences, the alternatives from the replay."""
        if self.k is None or replay is None:
            return None
        logprobs = scorer([self.words])[0].logprobs if self.words else []
        scored = replay.prompt(self.words, self.k, self.starts, logprobs)
        return self._logprobs(
            [t.token for t in scored],
            [t.logprob for t in scored],
            [t.top for t in scored],
            word_offsets(self.prompt, [t.token for t in scored]),
        )

    def word(self, token: Token) -> CompletionChoice:
        """One generated token as the text it adds (`Tokenizer.text_delta`: a space before it unless
        the tokenizer joins it, as `'s` or a subword piece; none before the first of an empty prompt)."""
        i = token.index
        text = self.tokenizer.text_delta(self.generated[i], token.token)
        if self.emitted[i] == 0:
            text = self.separator + text.lstrip()
        self.generated[i].append(token.token)
        offset = self.length[i] + len(text) - len(text.lstrip())
        self.length[i] += len(text)
        self.emitted[i] += 1
        logprobs = self._logprobs([token.token], [token.logprob], [token.top], [offset])
        return CompletionChoice(text=text, index=self.first_index + i, logprobs=logprobs)

    def finish(self, finish: Finish) -> CompletionChoice:
        """The end of a choice: OpenAI knows `stop` and `length`; the end of sentence is a stop."""
        reason = "stop" if finish.reason in (FINISH_EOS, FINISH_STOP) else "length"
        rest = self.tokenizer.text_rest(self.generated[finish.index])  # a character's bytes held back
        return CompletionChoice(text=rest, index=self.first_index + finish.index, logprobs=None, finish_reason=reason)

    def start(
        self, loaded: LoadedModel, sampling: Sampling, precision: str, scorer: Scorer
    ) -> tuple[list[CompletionChoice], Generation]:
        """The prompt's torch work: its echoed pieces (with echo=true), and its generation, ready to run."""
        replay = Replay(loaded, self.words, sampling.n, precision) if self.k is not None else None
        echoed: list[CompletionChoice] = []
        if self.echo:
            logprobs = self.echoed(replay, scorer)
            echoed = [
                CompletionChoice(text=self.prompt, index=self.first_index + i, logprobs=logprobs)
                for i in range(sampling.n)
            ]
        return echoed, Generation(loaded, self.words, sampling, top_logprobs=self.k, replay=replay, precision=precision)

    def piece(self, event: Token | Finish) -> CompletionChoice:
        return self.word(event) if isinstance(event, Token) else self.finish(event)

    def pieces(
        self, loaded: LoadedModel, sampling: Sampling, precision: str, scorer: Scorer
    ) -> Iterator[CompletionChoice]:
        """Every piece of this prompt's n choices, in the order they are produced."""
        echoed, generation = self.start(loaded, sampling, precision, scorer)
        yield from echoed
        yield from map(self.piece, generation.events())

    async def piece_batches(
        self, loaded: LoadedModel, sampling: Sampling, precision: str, scorer: Scorer
    ) -> AsyncIterator[list[CompletionChoice]]:
        """`pieces` for a stream on the event loop, in lists as they come; the prompt's work runs
        in a worker thread."""
        echoed, generation = await asyncio.to_thread(self.start, loaded, sampling, precision, scorer)
        if echoed:
            yield echoed
        async for events in generation.event_batches():
            yield list(map(self.piece, events))


def join(pieces: list[CompletionChoice], index: int, with_logprobs: bool) -> CompletionChoice:
    """One choice from its pieces, in order."""
    mine = [p for p in pieces if p.index == index]
    logprobs = None
    if with_logprobs:
        parts = [p.logprobs for p in mine if p.logprobs is not None]
        logprobs = CompletionLogprobs(
            tokens=[t for p in parts for t in p.tokens],
            token_logprobs=[t for p in parts for t in p.token_logprobs],
            top_logprobs=[t for p in parts for t in p.top_logprobs],
            text_offset=[t for p in parts for t in p.text_offset],
        )
    finish = next((p.finish_reason for p in mine if p.finish_reason is not None), None)
    return CompletionChoice(text="".join(p.text for p in mine), index=index, logprobs=logprobs, finish_reason=finish)


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={**STREAM_RESPONSES, **problem_responses(*INFERENCE_PROBLEMS)},
)
def create_completion(
    body: CompletionRequest,
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    slots: InferenceSlotsDep,
    batchers: BatchersDep,
    observability: ObservabilityDep,
) -> Response:
    """OpenAI-compatible completions: continue each prompt n times; echo + logprobs score the prompt."""
    return complete(body, principal, sessions, settings, cache, slots, batchers, observability)


@scoped_router.post(
    "/models/{model}/v1/completions",
    response_model=CompletionResponse,
    responses={**STREAM_RESPONSES, **problem_responses(*INFERENCE_PROBLEMS)},
)
def create_scoped_completion(
    model: ModelPath,
    body: ScopedCompletionRequest,
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    slots: InferenceSlotsDep,
    batchers: BatchersDep,
    observability: ObservabilityDep,
) -> Response:
    """Completions of the URL's model, for clients that find the tokenizer routes beside their base URL
    (lm-evaluation-harness: `base_url=$BASE/models/<model>/v1/completions`); a body naming another
    model is a 422."""
    with sessions() as session:
        same_model(session, principal, model, body.model)
    request = CompletionRequest.model_validate({**body.model_dump(exclude_unset=True), "model": model})
    return complete(request, principal, sessions, settings, cache, slots, batchers, observability)


def complete(
    body: CompletionRequest,
    principal: Principal,
    sessions: sessionmaker[Session],
    settings: Settings,
    cache: ModelCache,
    slots: Slots,
    batchers: Batchers,
    observability: Observability,
) -> Response:
    """Continue each prompt n times (see `create_completion`)."""
    sampling = body.sampling(16 if body.max_tokens is None else body.max_tokens)
    if body.echo:
        sampling = dataclasses.replace(sampling, stop_at_eos=False)
    if len(body.prompts) > settings.max_completion_prompts:
        raise Invalid(f"prompt: {len(body.prompts)} prompts, at most {settings.max_completion_prompts} per request")
    total_words = 0
    for given in body.prompts:  # the limits first: no model load for nothing
        words = given if isinstance(given, list) else words_of(given)
        check_request(words, sampling, settings)
        total_words += len(words)
    if total_words > settings.max_request_tokens:
        raise Invalid(f"prompt: {total_words} words in all, at most {settings.max_request_tokens} per request")
    precision = request_precision(body.precision, settings, cache.device)
    slot = slots.acquire()
    streaming = False  # once the stream owns the slot, it releases it when it ends
    try:
        response = _complete(
            body, principal, sessions, settings, cache, batchers, observability, sampling, precision, slot
        )
        streaming = body.stream
        return response
    finally:
        if not streaming:
            slot.release()


def _complete(
    body: CompletionRequest,
    principal: Principal,
    sessions: sessionmaker[Session],
    settings: Settings,
    cache: ModelCache,
    batchers: Batchers,
    observability: Observability,
    sampling: Sampling,
    precision: str,
    slot: Slot,
) -> Response:
    ref, loaded = serve_model(body.model, sessions, settings, cache, principal)
    batcher, owner = batchers.get(loaded, precision), principal.owner_id or "local"

    def scorer(sentences: Sequence[Sequence[str]]) -> list[SentenceScore]:
        return batcher.score(owner, sentences, score_eos=False)

    head = CompletionResponse(
        id=new_id("cmpl"),
        created=int(time.time()),
        model=body.model,
        choices=[],
        system_fingerprint=ref.checkpoint_id,
        precision=precision,
    )
    groups: list[PromptCompletions] = []
    tokenizer = Tokenizer() if body.is_pretokenized else loaded.tokenizer
    prompt_tokens = 0
    for p, given in enumerate(body.prompts):
        if isinstance(given, list):
            words = decode(loaded.vocab, given, f"prompt[{p}]" if len(body.prompts) > 1 else "prompt")
            text = tokenizer.text(words)
        else:
            text, words = given, tokenizer.tokens(given)
            check_request(words, sampling, settings)
        prompt_tokens += len(words)
        starts, words = split_start(words)
        groups.append(PromptCompletions(text, starts, words, p * sampling.n, body, tokenizer))

    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage

        async def chunks() -> AsyncIterator[list[CompletionResponse]]:
            for group in groups:
                async for pieces in group.piece_batches(loaded, sampling, precision, scorer):
                    yield [head.model_copy(update={"choices": [piece]}) for piece in pieces]
            generated = sum(sum(g.emitted) for g in groups)
            observability.tokens_generated.inc(generated)
            if include_usage:
                yield [head.model_copy(update={"usage": usage(prompt_tokens, generated)})]

        return event_stream(chunks(), slot)

    choices: list[CompletionChoice] = []
    for group in groups:
        pieces = list(group.pieces(loaded, sampling, precision, scorer))
        choices += [join(pieces, group.first_index + i, body.logprobs is not None) for i in range(sampling.n)]
    generated = sum(sum(g.emitted) for g in groups)
    observability.tokens_generated.inc(generated)
    result = head.model_copy(update={"choices": choices, "usage": usage(prompt_tokens, generated)})
    return Response(result.model_dump_json(), media_type="application/json")


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )
