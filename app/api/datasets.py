"""Routes: corpora (upload, server-side folders, list, get, delete)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from app.api.auth import AUTH_RESPONSES, AdminKey, ReadKey, WriteKey
from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.schemas import (
    TOKENIZER_DESCRIPTION,
    CorpusRegistration,
    CorpusRoots,
    DatasetOut,
    DatasetPage,
    PageCursor,
    PageLimit,
    TokenizerKind,
    problem_responses,
)
from app.training import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=AUTH_RESPONSES)

PROBLEMS = problem_responses(404, 413, 422, 429)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut, responses=PROBLEMS)
def upload_dataset(
    principal: WriteKey,
    engine: EngineDep,
    settings: SettingsDep,
    train: Annotated[UploadFile, File(description="training text: one sentence a line, words split by spaces")],
    valid: Annotated[UploadFile, File(description="validation text")],
    test: Annotated[UploadFile, File(description="test text")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    tokenizer: Annotated[TokenizerKind | None, Form(description=TOKENIZER_DESCRIPTION)] = None,
    lowercase: Annotated[bool | None, Form(description="lower-case the text first (default: only for ptb)")] = None,
    min_count: Annotated[
        int | None, Form(ge=1, le=1_000_000, description="word-level: training words seen fewer times are <unk>")
    ] = None,
    tokenizer_vocab_size: Annotated[
        int | None, Form(ge=300, description="bpe and unigram: the most pieces the model may have (default 16,000)")
    ] = None,
    convention: Annotated[
        Literal["ptb", "wikitext", "plain"] | None,
        Form(description="deprecated, the earlier name of tokenizer (plain is whitespace)", deprecated=True),
    ] = None,
) -> DatasetOut:
    """Upload a corpus (UTF-8 train/valid/test raw text, one sentence a line) and get its id, tokenizer,
    token counts, vocabulary size and per-split words, bytes and unknown words. The tokenizer is applied
    here (a subword model trained on the training split first); jobs train on its tokens."""
    choice = datasets.TokenizerChoice.of(settings, tokenizer, convention, lowercase, min_count, tokenizer_vocab_size)
    # The parts are already spooled to temporary files; they are copied, never read whole.
    files = {"train": train.file, "valid": valid.file, "test": test.file}
    return DatasetOut.of(datasets.create_upload(engine, settings, name, files, principal, choice))


@router.get("/roots", response_model=CorpusRoots)
def list_corpus_roots(principal: AdminKey, settings: SettingsDep) -> CorpusRoots:
    """Names of the server-side corpus folders that can be registered as datasets."""
    return CorpusRoots(roots=datasets.corpus_root_names(settings))


@router.post("/builtin", response_model=DatasetOut, responses={201: {"model": DatasetOut}, **PROBLEMS})
def register_builtin_dataset(
    body: CorpusRegistration, principal: AdminKey, engine: EngineDep, settings: SettingsDep, response: Response
) -> DatasetOut:
    """Register a server-side corpus folder (a configured root, optionally a folder inside it), tokenized
    as asked. The same folder with the same tokenizer (or none named) is the same dataset (200); with
    another tokenizer, a new one (201)."""
    choice = datasets.TokenizerChoice.of(
        settings, body.tokenizer, body.convention, body.lowercase, body.min_count, body.tokenizer_vocab_size
    )
    dataset, created = datasets.register_builtin(engine, settings, body.root, body.path, body.name, principal, choice)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return DatasetOut.of(dataset)


@router.get("", response_model=DatasetPage, responses=PROBLEMS)
def list_datasets(
    principal: ReadKey,
    session: SessionDep,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> DatasetPage:
    """List the datasets this key may see (its uploads and the server-side corpora), newest first."""
    rows, next_cursor = datasets.list_datasets(session, limit, cursor, principal)
    return DatasetPage(items=[DatasetOut.of(d) for d in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=PROBLEMS)
def get_dataset(dataset_id: str, principal: ReadKey, session: SessionDep) -> DatasetOut:
    """One dataset."""
    return DatasetOut.of(datasets.get_dataset(session, dataset_id, principal))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(403, 404, 409))
def delete_dataset(dataset_id: str, principal: WriteKey, engine: EngineDep, settings: SettingsDep) -> Response:
    """Delete a dataset and its files (409 while a queued or running job uses it)."""
    datasets.delete_dataset(engine, settings, dataset_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
