"""Routes: vLLM's tokenizer endpoints, `GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`.

Evaluation clients (lm-evaluation-harness's `local-completions`) look for them at the server root,
next to `/v1`, and count context lengths with them, so they split text exactly as scoring does
(whitespace) and map every out-of-vocabulary word to `<unk>`. The same routes answer under `/v1`.
They name no model in lm-evaluation-harness's calls: a request without `model` uses the alias
`default`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session, sessionmaker

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import SessionsDep, SettingsDep
from app.api.inference_schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from app.api.models import ModelCacheDep, serve_model
from app.api.schemas import problem_responses
from app.auth.principal import Principal
from app.errors import Invalid
from app.inference import text
from app.inference.registry import DEFAULT_ALIAS, LoadedModel, ModelCache, ModelRef
from app.settings import Settings
from model.data import EOS, UNK

router = APIRouter(tags=["tokenizer"])
PROBLEMS = {**problem_responses(400, 404, 409, 413, 422), **AUTH_RESPONSES}


def _model(
    name: str | None, sessions: sessionmaker[Session], settings: Settings, cache: ModelCache, viewer: Principal
) -> tuple[ModelRef, LoadedModel]:
    return serve_model(name or DEFAULT_ALIAS, sessions, settings, cache, viewer)


def tokenizer_info(
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200, description="none: the alias `default`")] = None,
) -> TokenizerInfo:
    """The model's word-level tokenizer: its end-of-sentence and unknown-word tokens and vocabulary size."""
    ref, loaded = _model(model, sessions, settings, cache, principal)
    return TokenizerInfo(
        model=ref.name,
        checkpoint_id=ref.checkpoint_id,
        eos_token=EOS,
        unk_token=UNK if UNK in loaded.vocab else None,
        vocab_size=len(loaded.vocab),
        model_max_length=settings.max_sentence_tokens,
    )


def tokenize(
    body: TokenizeRequest, principal: ReadKey, sessions: SessionsDep, settings: SettingsDep, cache: ModelCacheDep
) -> TokenizeResponse:
    """Token ids of a text: its words (split on whitespace) as vocabulary ids, unknown words as `<unk>`."""
    words = text.tokenize(body.prompt)
    if len(words) > settings.max_request_tokens:
        raise Invalid(f"prompt: {len(words)} words, at most {settings.max_request_tokens}")
    _, loaded = _model(body.model, sessions, settings, cache, principal)
    ids = text.encode(loaded.vocab, words)
    return TokenizeResponse(
        count=len(ids),
        max_model_len=settings.max_sentence_tokens,
        tokens=ids,
        token_strs=[loaded.vocab.words[i] for i in ids],
    )


def detokenize(
    body: DetokenizeRequest, principal: ReadKey, sessions: SessionsDep, settings: SettingsDep, cache: ModelCacheDep
) -> DetokenizeResponse:
    """Text of token ids: their vocabulary words joined by single spaces."""
    if len(body.tokens) > settings.max_request_tokens:
        raise Invalid(f"tokens: {len(body.tokens)} ids, at most {settings.max_request_tokens}")
    _, loaded = _model(body.model, sessions, settings, cache, principal)
    return DetokenizeResponse(prompt=text.detokenize(text.decode(loaded.vocab, body.tokens)))


for prefix in ("", "/v1"):
    router.add_api_route(f"{prefix}/tokenizer_info", tokenizer_info, methods=["GET"], responses=PROBLEMS)
    router.add_api_route(f"{prefix}/tokenize", tokenize, methods=["POST"], responses=PROBLEMS)
    router.add_api_route(f"{prefix}/detokenize", detokenize, methods=["POST"], responses=PROBLEMS)
