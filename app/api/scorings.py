"""Routes: scoring jobs, whole texts scored line by line in the background (`/v1/scorings`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.api.auth import AUTH_RESPONSES, ReadKey, WriteKey
from app.api.deps import EngineDep, SessionDep, SettingsDep
from app.api.downloads import download
from app.api.inference_schemas import Precision, ScoreAggregate, ScoreWarning
from app.api.jobs import LIVE_WORKERS
from app.api.schemas import Page, PageCursor, PageLimit, RunMetadataPatch, problem_responses
from app.errors import Conflict
from app.inference.scoring import ScoreOptions, total_unk_warnings
from app.scorings import jobs
from app.settings import Settings
from app.store.storage import open_storage
from app.store.tables import Scoring
from app.training.jobs import QUEUED, STATUSES, SUCCEEDED
from app.training.queue import live_capabilities, unmet_by, waiting_warning
from app.training.run_metadata import MAX_NAME, MAX_NOTES, MAX_TAGS, TAG_PATTERN

router = APIRouter(prefix="/v1/scorings", tags=["scorings"], responses=AUTH_RESPONSES)
PROBLEMS = problem_responses(400, 404, 409, 413, 422, 429)


class ScoringOut(BaseModel):
    id: str
    name: str | None = Field(None, description="what its owner calls it")
    tags: list[str] = Field(default_factory=list, description="its tags, in the order given")
    notes: str | None = None
    status: str = Field(description="queued, running, canceling, succeeded, failed or canceled")
    model: str
    checkpoint_id: str = Field(description="the checkpoint the model name meant at submission")
    source: str = Field(description="upload or dataset")
    dataset_id: str | None
    split: str | None
    options: dict[str, Any] = Field(description="log10, score_eos, pretokenized and precision: as /v1/score's")
    message: str | None = Field(
        description="while queued: what it waits for, when no running worker can run it; or that a stopping "
        "worker handed it back, and the line it resumes at"
    )
    warning: str | None = Field(
        None,
        description="while queued, when no worker that sent a heartbeat lately can run it: what is missing "
        "(bf16, or any worker at all) and that it waits for such a worker",
    )
    total_lines: int
    lines_done: int
    fraction: float = Field(description="lines_done / total_lines")
    eta_seconds: float | None = Field(
        None, description="seconds until it is done, from the lines this attempt scored per second; null unless running"
    )
    size_bytes: int = Field(
        description="bytes it keeps: the uploaded text and the results so far (they count in the key's storage quota)"
    )
    aggregate: ScoreAggregate = Field(description="/v1/score's aggregates over the lines scored so far")
    warnings: list[ScoreWarning] = Field(
        description="when the share of <unk> tokens over the lines so far is above LSTMLM_UNK_WARN_RATE"
    )
    attempt: int
    max_attempts: int
    error: str | None
    results_url: str | None = Field(description="the per-line results as JSON Lines, once succeeded")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(
        cls, row: Scoring, warn_rate: float, unmet: list[str] | None = None, warning: str | None = None
    ) -> ScoringOut:
        """The API view; `unmet`: what no live worker offers of a queued scoring's requirements;
        `warning`: why no live worker will start it (`waiting_warning`)."""
        aggregate = ScoreAggregate.model_validate(jobs.aggregate(row.sums, bool(row.options.get("log10"))))
        return cls(
            id=row.id,
            name=row.name,
            tags=list(row.tags or []),
            notes=row.notes,
            eta_seconds=jobs.eta_seconds(row),
            status=row.status,
            model=row.model,
            checkpoint_id=row.checkpoint_id,
            source=row.source,
            dataset_id=row.dataset_id,
            split=row.split,
            options={
                "log10": bool(row.options.get("log10")),
                "score_eos": bool(row.options.get("score_eos", True)),
                "pretokenized": jobs.pretokenized(row.options),
                "precision": jobs.precision_of(row.options),
            },
            message=f"waiting for a worker with {', '.join(unmet)}" if unmet else row.status_note,
            warning=warning,
            total_lines=row.total_lines,
            lines_done=row.lines_done,
            fraction=row.lines_done / row.total_lines if row.total_lines else 0.0,
            size_bytes=row.input_bytes + row.bytes_done,
            aggregate=aggregate,
            warnings=[
                ScoreWarning.model_validate(w)
                for w in total_unk_warnings(aggregate.num_unk, aggregate.num_tokens, warn_rate)
            ],
            attempt=row.attempt,
            max_attempts=row.max_attempts,
            error=row.error,
            results_url=f"/v1/scorings/{row.id}/results" if row.status == SUCCEEDED else None,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            updated_at=row.updated_at,
        )


def scoring_out(session: Session, settings: Settings, row: Scoring) -> ScoringOut:
    """The API view of a scoring; a queued one says what it waits for, and warns, when no live worker
    can run it."""
    if row.status != QUEUED:
        return ScoringOut.of(row, settings.unk_warn_rate)
    needs, workers = jobs.requirements(row.options), live_capabilities(session, LIVE_WORKERS)
    return ScoringOut.of(
        row, settings.unk_warn_rate, unmet_by(needs, workers), waiting_warning(needs, workers, LIVE_WORKERS)
    )


class ScoringPage(Page[ScoringOut]):
    pass


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScoringOut, responses=PROBLEMS)
def submit_scoring(
    principal: WriteKey,
    engine: EngineDep,
    session: SessionDep,
    settings: SettingsDep,
    model: Annotated[str, Form(min_length=1, max_length=200, description="a job id, checkpoint id or alias")],
    file: Annotated[UploadFile | None, File(description="UTF-8 text, one sentence a line")] = None,
    dataset_id: Annotated[
        str | None,
        Form(
            max_length=MAX_NAME,
            description="score a dataset's split instead: its id, or the name of exactly one dataset this key can see",
        ),
    ] = None,
    split: Annotated[str | None, Form(max_length=10, description="train, valid or test")] = None,
    log10: Annotated[bool, Form()] = False,
    score_eos: Annotated[bool, Form()] = True,
    pretokenized: Annotated[
        bool | None,
        Form(description="the lines are tokens already; default false: raw text, cut by the model's tokenizer"),
    ] = None,
    normalize: Annotated[bool | None, Form(description="deprecated: false is pretokenized=true")] = None,
    precision: Annotated[
        Precision | None,
        Form(
            description="fp32 or bf16; the server's LSTMLM_INFERENCE_PRECISION when omitted. A bf16 scoring "
            "waits for a worker whose machine has bf16"
        ),
    ] = None,
    name: Annotated[str | None, Form(max_length=MAX_NAME, description="what to call the scoring")] = None,
    tags: Annotated[
        list[str] | None,
        Form(
            description="tags (repeat the field for each): 1-50 characters of letters, digits and _ . : - each, "
            "at most 20, duplicates dropped",
            json_schema_extra={"items": {"type": "string", "pattern": TAG_PATTERN}, "maxItems": MAX_TAGS},
        ),
    ] = None,
    notes: Annotated[str | None, Form(max_length=MAX_NOTES, description="free-form notes")] = None,
) -> ScoringOut:
    """Queue the scoring of a text (an uploaded file or a dataset split), line by line, on the workers."""
    options = ScoreOptions(
        log10=log10,
        score_eos=score_eos,
        pretokenized=pretokenized if pretokenized is not None else normalize is False,
        precision=precision or settings.inference_precision,
    )
    upload = file.file if file is not None else None  # spooled to a temporary file: copied, never read whole
    row = jobs.submit(
        engine,
        session,
        settings,
        model,
        options,
        upload=upload,
        dataset_id=dataset_id,
        split=split,
        owner=principal,
        metadata={"name": name, "tags": tags, "notes": notes},
    )
    return scoring_out(session, settings, row)


@router.get("", response_model=ScoringPage, responses=PROBLEMS)
def list_scorings(
    principal: ReadKey,
    session: SessionDep,
    settings: SettingsDep,
    status_filter: Annotated[
        list[str] | None,
        Query(
            alias="status",
            description="only these statuses (repeatable)",
            json_schema_extra={"items": {"enum": list(STATUSES)}},
        ),
    ] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_NAME, description="a case-insensitive part of the name, or exactly the id"),
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_TAGS,
            description="only scorings with every one of these tags (repeatable)",
            json_schema_extra={"items": {"type": "string", "pattern": TAG_PATTERN}},
        ),
    ] = None,
    sort: Annotated[
        Literal["-created_at", "created_at"],
        Query(description="-created_at: newest first (the default); created_at: oldest first"),
    ] = "-created_at",
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> ScoringPage:
    """Scoring jobs, filtered by status, name or id and tags; newest first by default."""
    rows, next_cursor = jobs.page(session, limit, cursor, principal, statuses=status_filter, q=q, tags=tag, sort=sort)
    return ScoringPage(items=[scoring_out(session, settings, r) for r in rows], next_cursor=next_cursor)


@router.get("/{scoring_id}", response_model=ScoringOut, responses=PROBLEMS)
def get_scoring(scoring_id: str, principal: ReadKey, session: SessionDep, settings: SettingsDep) -> ScoringOut:
    """One scoring job: status, progress and the aggregates so far."""
    return scoring_out(session, settings, jobs.get(session, scoring_id, principal))


@router.patch("/{scoring_id}", response_model=ScoringOut, responses=PROBLEMS)
def edit_scoring(
    scoring_id: str,
    body: RunMetadataPatch,
    principal: WriteKey,
    engine: EngineDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ScoringOut:
    """Change a scoring's name, tags or notes: only the fields sent change (null clears one), in any status."""
    jobs.update_metadata(engine, scoring_id, body.changes(), principal)
    return scoring_out(session, settings, jobs.get(session, scoring_id, principal))


@router.post("/{scoring_id}/cancel", response_model=ScoringOut, responses=PROBLEMS)
def cancel_scoring(scoring_id: str, principal: WriteKey, engine: EngineDep, settings: SettingsDep) -> ScoringOut:
    """Cancel: a queued scoring at once, a running one after its current chunk; 409 once finished."""
    return ScoringOut.of(jobs.cancel(engine, scoring_id, principal), settings.unk_warn_rate)


@router.delete("/{scoring_id}", status_code=status.HTTP_204_NO_CONTENT, responses=PROBLEMS)
def delete_scoring(scoring_id: str, principal: WriteKey, engine: EngineDep, settings: SettingsDep) -> Response:
    """Delete a finished scoring with its results file (and the uploaded text); 409 while queued or running."""
    jobs.delete(engine, settings, scoring_id, principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{scoring_id}/results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}, **PROBLEMS},
)
def scoring_results(
    scoring_id: str, principal: ReadKey, session: SessionDep, settings: SettingsDep
) -> StreamingResponse:
    """The per-line results as JSON Lines (one object a line, in the text's order), once succeeded."""
    row = jobs.get(session, scoring_id, principal)
    if row.status != SUCCEEDED:
        raise Conflict(f"scoring {scoring_id} is {row.status}; its results are ready once it has succeeded")
    size, chunks = jobs.open_results(open_storage(settings), row)
    return download(size, chunks, "application/x-ndjson", f"{scoring_id}.jsonl")
