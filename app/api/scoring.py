"""Route: `POST /v1/score`, per-token log-probabilities and perplexities of sentences."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import ServingDep
from app.api.inference_schemas import ScoreAggregate, ScoreRequest, ScoreResponse, ScoreWarning, SentenceOut
from app.api.models import serve_model
from app.api.schemas import INFERENCE_PROBLEMS, problem_responses
from app.inference import scoring, text
from app.inference.precision import request_precision
from app.inference.registry import LoadedModel, ModelRef
from model.tokenizers import legacy_name

router = APIRouter(prefix="/v1", tags=["inference"], responses=AUTH_RESPONSES)

# An answer of at most this many tokens is built on the event loop: a few hundred microseconds,
# less than the hand-off to a worker thread and back; a larger one is built in a thread.
INLINE_ANSWER_TOKENS = 256


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

    def prepare() -> tuple[ModelRef, LoadedModel, list[scoring.Sentence]]:  # database, disk, tokenizer
        ref, loaded = serve_model(body.model, serving.sessions, settings, cache, principal)
        sentences = scoring.sentences_of(body.sentences, options, settings, loaded.tokenizer)
        if loaded.vocab.unk_id is None:  # an unknown word is refused here, not in a batch it shares
            for sentence in sentences:
                text.encode(loaded.vocab, sentence.tokens)
        return ref, loaded, sentences

    ref, loaded, sentences = await anyio.to_thread.run_sync(prepare, limiter=serving.preparing)
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
