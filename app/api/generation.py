"""Route: `POST /v1/generate`, continuations of a prompt, whole or streamed as Server-Sent Events.

Also the event-stream response the completions route shares: `data: {json}` per event, then
`data: [DONE]`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import InferenceSlotsDep, ObservabilityDep, SessionsDep, SettingsDep
from app.api.inference_schemas import (
    GenerateChoice,
    GenerateChunk,
    GenerateChunkChoice,
    GenerateRequest,
    GenerateResponse,
    Usage,
)
from app.api.models import ModelCacheDep, serve_model
from app.api.schemas import INFERENCE_PROBLEMS, problem_responses
from app.inference.generation import FINISH_LENGTH, Finish, Generation, Sampling, Token, check_request
from app.inference.precision import request_precision
from app.inference.registry import ModelRef
from app.inference.slots import Slot
from app.observability.prometheus import Observability
from model.tokenizers import Tokenizer, words_of

router = APIRouter(prefix="/v1", tags=["inference"], responses=AUTH_RESPONSES)
log = logging.getLogger(__name__)

STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}}}
}


def event_stream(chunks: AsyncIterable[Sequence[BaseModel]], slot: Slot | None = None) -> StreamingResponse:
    """A Server-Sent Events response: one `data:` event per chunk, then `data: [DONE]`.

    The chunks come in lists, what is ready at once (torch runs in the decode loop's thread or a
    worker thread, never on the event loop), and each list goes out in one write: a stream that
    falls behind catches up in fewer, larger sends. An error after the stream started can no longer
    change the status: it is sent as an `error` object (as OpenAI does) before `[DONE]`.
    """

    async def body() -> AsyncIterator[str]:
        try:
            async for batch in chunks:
                yield "".join(f"data: {chunk.model_dump_json()}\n\n" for chunk in batch)
        except Exception as exc:
            log.exception("stream failed")
            error = {"message": f"generation failed: {type(exc).__name__}", "type": "server_error"}
            yield f"data: {json.dumps({'error': error})}\n\n"
        finally:
            if slot is not None:
                slot.release()
        yield "data: [DONE]\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    # The slot (if any) is held until the stream ends; the background task releases it as well when
    # the client left before the first event (release is idempotent).
    background = BackgroundTask(slot.release) if slot is not None else None
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers, background=background)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses={**STREAM_RESPONSES, **problem_responses(*INFERENCE_PROBLEMS)},
)
def generate(
    body: GenerateRequest,
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    slots: InferenceSlotsDep,
    observability: ObservabilityDep,
) -> Response:
    """Continue a prompt `n` times (temperature 0 is greedy); `stream: true` sends each word as an event."""
    sampling = body.sampling(body.max_tokens)
    check_request(words_of(body.prompt), sampling, settings)  # limits first: no model load for nothing
    precision = request_precision(body.precision, settings, cache.device)
    slot = slots.acquire()
    streaming = False  # once the stream owns the slot, it releases it when it ends
    try:
        ref, loaded = serve_model(body.model, sessions, settings, cache, principal)
        tokenizer = Tokenizer() if body.is_pretokenized else loaded.tokenizer  # both ways: prompt and text
        words = tokenizer.tokens(body.prompt)
        check_request(words, sampling, settings)
        top = body.top_logprobs if body.top_logprobs > 0 else None
        generation = Generation(loaded, words, sampling, top_logprobs=top, precision=precision)
        if body.stream:
            head = GenerateChunk(
                id=new_id("gen"), created=int(time.time()), model=body.model, precision=precision, choices=[]
            )
            chunks = _chunks(generation.event_batches(), head, len(words), body.logprobs, observability, tokenizer)
            response = event_stream(chunks, slot)
            streaming = True
            return response
        return _whole(body, ref, tokenizer, words, sampling, generation.events(), observability, precision)
    finally:
        if not streaming:
            slot.release()


def _whole(
    body: GenerateRequest,
    ref: ModelRef,
    tokenizer: Tokenizer,
    words: list[str],
    sampling: Sampling,
    events: Iterable[Token | Finish],
    observability: Observability,
    precision: str,
) -> Response:
    """The non-streamed answer: every continuation whole."""
    top = body.top_logprobs if body.top_logprobs > 0 else None
    tokens: list[list[str]] = [[] for _ in range(sampling.n)]
    logprobs: list[list[float]] = [[] for _ in range(sampling.n)]
    tops: list[list[dict[str, float]]] = [[] for _ in range(sampling.n)]
    finished = [FINISH_LENGTH] * sampling.n
    for event in events:
        if isinstance(event, Token):
            tokens[event.index].append(event.token)
            logprobs[event.index].append(event.logprob)
            tops[event.index].append(event.top or {})
        else:
            finished[event.index] = event.reason
    choices = [
        GenerateChoice.model_validate(
            {
                "index": i,
                "text": tokenizer.text(tokens[i]),
                "tokens": tokens[i],
                "logprobs": logprobs[i] if body.logprobs else None,
                "top_logprobs": tops[i] if top else None,
                "finish_reason": finished[i],
            }
        )
        for i in range(sampling.n)
    ]
    generated = sum(len(t) for t in tokens)
    observability.tokens_generated.inc(generated)
    result = GenerateResponse(
        id=new_id("gen"),
        created=int(time.time()),
        model=body.model,
        job_id=ref.job_id,
        checkpoint_id=ref.checkpoint_id,
        prompt_words=words,
        precision=precision,
        choices=choices,
        usage=Usage(prompt_tokens=len(words), completion_tokens=generated, total_tokens=len(words) + generated),
    )
    return Response(result.model_dump_json(), media_type="application/json")


async def _chunks(
    batches: AsyncIterable[list[Token | Finish]],
    head: GenerateChunk,
    prompt_tokens: int,
    with_logprobs: bool,
    observability: Observability,
    tokenizer: Tokenizer,
) -> AsyncIterator[list[GenerateChunk]]:
    """One chunk per token and one per finished choice (copies of `head`), in lists as the events
    come; the last chunk carries the usage.

    A chunk's `text` is what its token adds to the readable text (`Tokenizer.text_delta`), so the
    pieces join to the non-streamed answer's text."""
    words: dict[int, list[str]] = {}  # each choice's tokens so far
    generated = 0
    async for events in batches:
        chunks = []
        tokens = 0
        for event in events:
            if isinstance(event, Token):
                tokens += 1
                before = words.setdefault(event.index, [])
                choice = GenerateChunkChoice(
                    index=event.index,
                    token=event.token,
                    text=tokenizer.text_delta(before, event.token),
                    logprob=event.logprob if with_logprobs else None,
                    top_logprobs=event.top,
                )
                before.append(event.token)
            else:
                rest = tokenizer.text_rest(words.get(event.index, []))  # a character's bytes held back
                choice = GenerateChunkChoice.model_validate(
                    {"index": event.index, "token": None, "text": rest, "finish_reason": event.reason}
                )
            chunks.append(head.model_copy(update={"choices": [choice]}))
        observability.tokens_generated.inc(tokens)
        generated += tokens
        yield chunks
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=generated, total_tokens=prompt_tokens + generated)
    yield [head.model_copy(update={"usage": usage})]
