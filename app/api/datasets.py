"""Routes: corpora (upload, server-side folders, list, get, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from app.api.auth import AUTH_RESPONSES, AdminKey, ReadKey, WriteKey
from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.schemas import (
    CorpusRegistration,
    CorpusRoots,
    DatasetOut,
    DatasetPage,
    PageCursor,
    PageLimit,
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
    convention: Annotated[
        str | None, Form(max_length=20, description="ptb, wikitext or plain; left out: detected from the text")
    ] = None,
) -> DatasetOut:
    """Upload a corpus (UTF-8 train/valid/test text) and get its id, token counts and vocabulary size."""
    # The parts are already spooled to temporary files; they are copied, never read whole.
    files = {"train": train.file, "valid": valid.file, "test": test.file}
    return DatasetOut.of(datasets.create_upload(engine, settings, name, files, principal, convention))


@router.get("/roots", response_model=CorpusRoots)
def list_corpus_roots(principal: AdminKey, settings: SettingsDep) -> CorpusRoots:
    """Names of the server-side corpus folders that can be registered as datasets."""
    return CorpusRoots(roots=datasets.corpus_root_names(settings))


@router.post("/builtin", response_model=DatasetOut, responses={201: {"model": DatasetOut}, **PROBLEMS})
def register_builtin_dataset(
    body: CorpusRegistration, principal: AdminKey, engine: EngineDep, settings: SettingsDep, response: Response
) -> DatasetOut:
    """Register a server-side corpus folder (a configured root, optionally a folder inside it)."""
    dataset, created = datasets.register_builtin(
        engine, settings, body.root, body.path, body.name, principal, body.convention
    )
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
