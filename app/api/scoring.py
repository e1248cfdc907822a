"""Route: `POST /v1/score`, per-token log-probabilities and perplexities of sentences."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import SessionDep, SettingsDep
from app.api.inference_schemas import ScoreAggregate, ScoreRequest, ScoreResponse, SentenceOut
from app.api.models import ModelCacheDep, serve_model
from app.api.schemas import problem_responses
from app.inference import scoring
from app.inference.precision import request_precision

router = APIRouter(prefix="/v1", tags=["inference"])


@router.post("/score", response_model=ScoreResponse, responses=problem_responses(400, 404, 409, 422))
def score(body: ScoreRequest, session: SessionDep, settings: SettingsDep, cache: ModelCacheDep) -> Response:
    """Score each sentence from a fresh state: per-token log p, `<unk>` flags, perplexities and aggregates."""
    precision = request_precision(body.precision, settings, cache.device)
    options = scoring.ScoreOptions(
        log10=body.log10, score_eos=body.score_eos, normalize=body.normalize, precision=precision
    )
    sentences = scoring.words_of(body.sentences, options, settings)  # limits first: no model load for nothing
    ref, loaded = serve_model(body.model, session, settings, cache)
    scored, totals = scoring.score_words(loaded, sentences, options)
    result = ScoreResponse(
        model=body.model,
        job_id=ref.job_id,
        checkpoint_id=ref.checkpoint_id,
        log_base="10" if body.log10 else "e",
        precision=precision,
        sentences=[SentenceOut.model_validate(s) for s in scored],
        aggregate=ScoreAggregate.model_validate(totals),
    )
    # Serialised once here: validating a large, already typed body again costs as much as the JSON.
    return Response(result.model_dump_json(), media_type="application/json")
