"""Route: `POST /v1/score`, per-token log-probabilities and perplexities of sentences."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import ServingDep
from app.api.inference_schemas import ScoreAggregate, ScoreRequest, ScoreResponse, ScoreWarning, SentenceOut
from app.api.schemas import INFERENCE_PROBLEMS, problem_responses
from app.inference import scoring, text
from app.inference.precision import request_precision
from app.inference.registry import LoadedModel
from model.tokenizers import legacy_name

router = APIRouter(prefix="/v1", tags=["inference"], responses=AUTH_RESPONSES)

# An answer of at most this many tokens is built on the event loop: a few hundred microseconds,
# less than the hand-off to a worker thread and back; a larger one is built in a thread.
INLINE_ANSWER_TOKENS = 256
# An input of at most this many characters is tokenized on the event loop when its model is in memory.
INLINE_TEXT_CHARS = 4096


@router.post("/score", response_model=ScoreResponse, responses=problem_responses(*INFERENCE_PROBLEMS))
async def score(body: ScoreRequest, principal: ReadKey, serving: ServingDep) -> Response:
    """Score each sentence from a fresh state: per-token log p, `<unk>` flags, perplexities per token
    and per word, bits per byte, `<unk>` shares, aggregates and warnings.

    The sentences of concurrent requests are scored together (`app.inference.batcher`): a request
    waits for its turn, at most `LSTMLM_MAX_QUEUE_SECONDS`, and gets exactly the numbers it would
    get alone."""
    settings, cache, observability = serving.settings, serving.cache, serving.observability
    precision = request_precision(body.precision, settings, cache.device)
    options = scoring.ScoreOptions(
        log10=body.log10,
        score_eos=body.score_eos,
        pretokenized=body.is_pretokenized,
        precision=precision,
        max_unk_rate=body.max_unk_rate,
    )
    scoring.check_request_words(body.sentences, settings)  # limits first: no model load for nothing

    # The name is resolved with the names of concurrent requests, in one database round (each read
    # after its request arrived: what any process changed before is seen).
    ref = await serving.resolver.resolve(body.model, principal)

    def prepare(loaded: LoadedModel | None) -> tuple[LoadedModel, list[scoring.Sentence]]:  # disk, tokenizer
        loaded = loaded or cache.get(ref)
        sentences = scoring.sentences_of(body.sentences, options, settings, loaded.tokenizer)
        if loaded.vocab.unk_id is None:  # an unknown word is refused here, not in a batch it shares
            for sentence in sentences:
                text.encode(loaded.vocab, sentence.tokens)
        return loaded, sentences

    # A model in memory and a small input are prepared here: a hand-off to a worker thread and back
    # costs more than tokenizing a few sentences.
    in_memory = cache.loaded(ref)
    if in_memory is not None and sum(len(t) for t in body.sentences) <= INLINE_TEXT_CHARS:
        loaded, sentences = prepare(in_memory)
    else:
        loaded, sentences = await anyio.to_thread.run_sync(prepare, in_memory, limiter=serving.preparing)
    batcher = serving.batchers.get(loaded, precision)
    scores = await batcher.score_async(principal.owner_id or "local", [s.tokens for s in sentences], options.score_eos)

    def answer() -> str:
        scored, totals = scoring.summarize_all(scores, sentences, options)
        aggregate = ScoreAggregate.model_validate(totals)
        observability.tokens_scored.inc(aggregate.num_tokens)
        warnings = scoring.unk_warnings(scored, totals, settings.unk_warn_rate)
        result = ScoreResponse(
            model=body.model,
            job_id=ref.job_id,
            checkpoint_id=ref.checkpoint_id,
            log_base="10" if body.log10 else "e",
            tokenizer=loaded.tokenizer.kind,
            pretokenized=options.pretokenized,
            convention=legacy_name(loaded.tokenizer.kind),
            precision=precision,
            sentences=[SentenceOut.model_validate(s) for s in scored],
            aggregate=aggregate,
            warnings=[ScoreWarning.model_validate(w) for w in warnings],
        )
        # Serialised once here: validating a large, already typed body again costs as much as the JSON.
        return result.model_dump_json()

    if sum(len(s.tokens) for s in scores) <= INLINE_ANSWER_TOKENS:
        return Response(answer(), media_type="application/json")
    return Response(await anyio.to_thread.run_sync(answer), media_type="application/json")
