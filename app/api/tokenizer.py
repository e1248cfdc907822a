"""Routes: vLLM's tokenizer endpoints, `GET /tokenizer_info`, `POST /tokenize`, `POST /detokenize`.

Evaluation clients (lm-evaluation-harness's `local-completions`) look for them next to `/v1`: with
`base_url=$BASE/models/<model>/v1/completions` at `$BASE/models/<model>/tokenizer_info`, ... . Those
model-scoped routes serve the model of their URL to any key that may read it, and a request body
that names another model is a 422. The same routes answer at the server root and under `/v1`
(for compatibility), where a request without `model` uses the alias `default`.

They cut text exactly as scoring does: with the model's own tokenizer (`model.tokenizers`), or on
whitespace with `pretokenized`, every token outside the vocabulary mapped to `<unk>`. The literal
`<eos>` is the end-of-sentence token in every tokenizer, so a client finds its id by tokenizing it.
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
    ModelPath,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from app.api.models import ModelCacheDep, serve_model
from app.api.schemas import problem_responses
from app.auth.principal import Principal
from app.errors import Invalid
from app.inference import text
from app.inference.registry import DEFAULT_ALIAS, LoadedModel, ModelCache, ModelRef, same_model
from app.settings import Settings
from model.data import EOS, UNK
from model.tokenizers import Tokenizer, words_of

router = APIRouter(tags=["tokenizer"])
PROBLEMS = {**problem_responses(400, 404, 409, 413, 422), **AUTH_RESPONSES}


def _model(
    name: str | None,
    sessions: sessionmaker[Session],
    settings: Settings,
    cache: ModelCache,
    viewer: Principal,
    scoped: str | None = None,
) -> tuple[ModelRef, LoadedModel]:
    """The model a request means: the URL's (`scoped`), which a body's `name` must agree with, or
    the body's, or the alias `default`."""
    if scoped is not None:
        with sessions() as session:
            same_model(session, viewer, scoped, name)
        return serve_model(scoped, sessions, settings, cache, viewer)
    return serve_model(name or DEFAULT_ALIAS, sessions, settings, cache, viewer)


def _info(ref: ModelRef, loaded: LoadedModel, settings: Settings) -> TokenizerInfo:
    tokenizer = loaded.tokenizer
    return TokenizerInfo(
        model=ref.name,
        checkpoint_id=ref.checkpoint_id,
        tokenizer_class="subword" if tokenizer.subword else "word-level",
        tokenizer=tokenizer.kind,
        lowercase=tokenizer.lowercase,
        eos_token=EOS,
        unk_token=UNK if UNK in loaded.vocab and not tokenizer.subword else None,
        vocab_size=len(loaded.vocab),
        model_max_length=settings.max_sentence_tokens,
    )


def _tokenize(body: TokenizeRequest, loaded: LoadedModel, settings: Settings) -> TokenizeResponse:
    tokenizer = Tokenizer() if body.pretokenized else loaded.tokenizer
    tokens = tokenizer.tokens(body.prompt)
    if len(tokens) > settings.max_request_tokens:
        raise Invalid(f"prompt: {len(tokens)} tokens, at most {settings.max_request_tokens}")
    ids = text.encode(loaded.vocab, tokens)
    return TokenizeResponse(
        count=len(ids),
        max_model_len=settings.max_sentence_tokens,
        tokens=ids,
        token_strs=[loaded.vocab.words[i] for i in ids],
    )


def _detokenize(body: DetokenizeRequest, loaded: LoadedModel, settings: Settings) -> DetokenizeResponse:
    if len(body.tokens) > settings.max_request_tokens:
        raise Invalid(f"tokens: {len(body.tokens)} ids, at most {settings.max_request_tokens}")
    tokens = text.decode(loaded.vocab, body.tokens)
    return DetokenizeResponse(prompt=loaded.tokenizer.text(tokens) if not body.pretokenized else " ".join(tokens))


def _check_words(prompt: str, settings: Settings) -> None:
    """The request limit on the text's words, before any model is loaded."""
    count = len(words_of(prompt))
    if count > settings.max_request_tokens:
        raise Invalid(f"prompt: {count} words, at most {settings.max_request_tokens}")


def tokenizer_info(
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200, description="none: the alias `default`")] = None,
) -> TokenizerInfo:
    """The model's tokenizer: its kind, end-of-sentence and unknown-word tokens and vocabulary size."""
    ref, loaded = _model(model, sessions, settings, cache, principal)
    return _info(ref, loaded, settings)


def tokenize(
    body: TokenizeRequest, principal: ReadKey, sessions: SessionsDep, settings: SettingsDep, cache: ModelCacheDep
) -> TokenizeResponse:
    """Token ids of a text, cut by the model's tokenizer; tokens outside the vocabulary as `<unk>`."""
    _check_words(body.prompt, settings)
    _, loaded = _model(body.model, sessions, settings, cache, principal)
    return _tokenize(body, loaded, settings)


def detokenize(
    body: DetokenizeRequest, principal: ReadKey, sessions: SessionsDep, settings: SettingsDep, cache: ModelCacheDep
) -> DetokenizeResponse:
    """Text of token ids, as the model's tokenizer writes them (subword pieces joined into words)."""
    _, loaded = _model(body.model, sessions, settings, cache, principal)
    return _detokenize(body, loaded, settings)


def scoped_tokenizer_info(
    model: ModelPath, principal: ReadKey, sessions: SessionsDep, settings: SettingsDep, cache: ModelCacheDep
) -> TokenizerInfo:
    """The URL's model's tokenizer (the route lm-evaluation-harness finds from a scoped base URL)."""
    ref, loaded = _model(None, sessions, settings, cache, principal, scoped=model)
    return _info(ref, loaded, settings)


def scoped_tokenize(
    model: ModelPath,
    body: TokenizeRequest,
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
) -> TokenizeResponse:
    """Token ids of a text under the URL's model; a body naming another model is a 422."""
    _check_words(body.prompt, settings)
    _, loaded = _model(body.model, sessions, settings, cache, principal, scoped=model)
    return _tokenize(body, loaded, settings)


def scoped_detokenize(
    model: ModelPath,
    body: DetokenizeRequest,
    principal: ReadKey,
    sessions: SessionsDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
) -> DetokenizeResponse:
    """Text of token ids under the URL's model; a body naming another model is a 422."""
    _, loaded = _model(body.model, sessions, settings, cache, principal, scoped=model)
    return _detokenize(body, loaded, settings)


for prefix in ("", "/v1"):
    router.add_api_route(f"{prefix}/tokenizer_info", tokenizer_info, methods=["GET"], responses=PROBLEMS)
    router.add_api_route(f"{prefix}/tokenize", tokenize, methods=["POST"], responses=PROBLEMS)
    router.add_api_route(f"{prefix}/detokenize", detokenize, methods=["POST"], responses=PROBLEMS)
router.add_api_route("/models/{model}/tokenizer_info", scoped_tokenizer_info, methods=["GET"], responses=PROBLEMS)
router.add_api_route("/models/{model}/tokenize", scoped_tokenize, methods=["POST"], responses=PROBLEMS)
router.add_api_route("/models/{model}/detokenize", scoped_detokenize, methods=["POST"], responses=PROBLEMS)
