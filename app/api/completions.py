"""Route: `POST /v1/completions`, OpenAI's legacy completions API over the word-level models.

What OpenAI clients and evaluation tools rely on works as they expect:

- `echo=true, max_tokens=0, logprobs=k` returns the prompt's token log-probabilities, the first one
  `null` (OpenAI's convention; the model does define p(w1 | <eos>), /v1/score reports it);
- a completion's text starts with a space when it continues a prompt that does not end in one, so
  `prompt + text` reads right; tokens are words; `text_offset` counts characters from the start of
  the prompt, echoed or not;
- `finish_reason` is `stop` for a stop sequence or the end of the sentence, `length` otherwise;
- `stream=true` sends `text_completion` chunks and `data: [DONE]`; `stream_options.include_usage`
  adds a last chunk with the usage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, Response

from app.api.deps import SessionDep, SettingsDep
from app.api.generation import STREAM_RESPONSES, event_stream, new_id
from app.api.inference_schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from app.api.models import ModelCacheDep, serve_model
from app.api.schemas import problem_responses
from app.inference.generation import (
    FINISH_EOS,
    FINISH_STOP,
    Finish,
    Replay,
    Sampling,
    Token,
    check_request,
    generate_events,
)
from app.inference.precision import request_precision
from app.inference.registry import LoadedModel
from app.inference.text import normalize_ptb, tokenize, word_offsets

router = APIRouter(prefix="/v1", tags=["openai"])


class PromptCompletions:
    """The n completions of one prompt as pieces: the echoed prompt, each word, each end.

    Streaming sends every piece as a chunk; the whole response joins the pieces of each choice.
    """

    def __init__(self, prompt: str, words: list[str], first_index: int, body: CompletionRequest) -> None:
        self.prompt, self.words, self.first_index = prompt, words, first_index
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

    def echoed(self, replay: Replay | None) -> CompletionLogprobs | None:
        """The log-probabilities of the prompt's words (echo=true), when asked for."""
        if self.k is None or replay is None:
            return None
        scored = replay.prompt(self.words, self.k)
        return self._logprobs(
            [t.token for t in scored], [t.logprob for t in scored], [t.top for t in scored], word_offsets(self.prompt)
        )

    def word(self, token: Token) -> CompletionChoice:
        """One generated word, with a space before it (none before the first of an empty prompt)."""
        i = token.index
        text = (self.separator if self.emitted[i] == 0 else " ") + token.token
        offset = self.length[i] + len(text) - len(token.token)
        self.length[i] += len(text)
        self.emitted[i] += 1
        logprobs = self._logprobs([token.token], [token.logprob], [token.top], [offset])
        return CompletionChoice(text=text, index=self.first_index + i, logprobs=logprobs)

    def finish(self, finish: Finish) -> CompletionChoice:
        """The end of a choice: OpenAI knows `stop` and `length`; the end of sentence is a stop."""
        reason = "stop" if finish.reason in (FINISH_EOS, FINISH_STOP) else "length"
        return CompletionChoice(text="", index=self.first_index + finish.index, logprobs=None, finish_reason=reason)

    def pieces(self, loaded: LoadedModel, sampling: Sampling, precision: str) -> Iterator[CompletionChoice]:
        """Every piece of this prompt's n choices, in the order they are produced."""
        replay = Replay(loaded, self.words, sampling.n, precision) if self.k is not None else None
        if self.echo:
            logprobs = self.echoed(replay)
            for i in range(sampling.n):
                yield CompletionChoice(text=self.prompt, index=self.first_index + i, logprobs=logprobs)
        events = generate_events(loaded, self.words, sampling, top_logprobs=self.k, replay=replay, precision=precision)
        for event in events:
            yield self.word(event) if isinstance(event, Token) else self.finish(event)


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
    responses={**STREAM_RESPONSES, **problem_responses(400, 404, 409, 422)},
)
def create_completion(
    body: CompletionRequest, session: SessionDep, settings: SettingsDep, cache: ModelCacheDep
) -> Response:
    """OpenAI-compatible completions: continue each prompt n times; echo + logprobs score the prompt."""
    sampling = body.sampling(16 if body.max_tokens is None else body.max_tokens)
    prompts = []
    for text in body.prompts:
        words = tokenize(text)
        prompts.append((text, normalize_ptb(words) if body.normalize else words))
        check_request(prompts[-1][1], sampling, settings)
    precision = request_precision(body.precision, settings, cache.device)
    ref, loaded = serve_model(body.model, session, settings, cache)
    head = CompletionResponse(
        id=new_id("cmpl"),
        created=int(time.time()),
        model=body.model,
        choices=[],
        system_fingerprint=ref.checkpoint_id,
        precision=precision,
    )
    groups = [PromptCompletions(text, words, p * sampling.n, body) for p, (text, words) in enumerate(prompts)]
    prompt_tokens = sum(len(words) for _, words in prompts)

    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage

        def chunks() -> Iterator[CompletionResponse]:
            for group in groups:
                for piece in group.pieces(loaded, sampling, precision):
                    yield head.model_copy(update={"choices": [piece]})
            if include_usage:
                generated = sum(sum(g.emitted) for g in groups)
                yield head.model_copy(update={"usage": usage(prompt_tokens, generated)})

        return event_stream(chunks())

    choices: list[CompletionChoice] = []
    for group in groups:
        pieces = list(group.pieces(loaded, sampling, precision))
        choices += [join(pieces, group.first_index + i, body.logprobs is not None) for i in range(sampling.n)]
    generated = sum(sum(g.emitted) for g in groups)
    result = head.model_copy(update={"choices": choices, "usage": usage(prompt_tokens, generated)})
    return Response(result.model_dump_json(), media_type="application/json")


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )
