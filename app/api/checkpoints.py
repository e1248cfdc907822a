"""Routes: a job's checkpoints (list with the best marked, one, download)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.api.auth import AUTH_RESPONSES, ReadKey
from app.api.deps import SessionDep, SettingsDep
from app.api.downloads import download
from app.api.schemas import CheckpointList, CheckpointOut, problem_responses
from app.store.storage import open_storage
from app.training import checkpoints, jobs

router = APIRouter(prefix="/v1/jobs/{job_id}/checkpoints", tags=["checkpoints"], responses=AUTH_RESPONSES)

PROBLEMS = problem_responses(404)


@router.get("", response_model=CheckpointList, responses=PROBLEMS)
def list_checkpoints(job_id: str, principal: ReadKey, session: SessionDep) -> CheckpointList:
    """A job's checkpoints, oldest first, with the best (lowest validation perplexity) marked."""
    precision = jobs.training_precision(jobs.get_job(session, job_id, principal))
    rows = checkpoints.ordered(session, job_id)
    best = checkpoints.best_of(rows)
    best_id = best.id if best else None
    return CheckpointList(items=[CheckpointOut.of(row, best_id, precision) for row in rows], best_id=best_id)


@router.get("/{checkpoint_id}", response_model=CheckpointOut, responses=PROBLEMS)
def get_checkpoint(job_id: str, checkpoint_id: str, principal: ReadKey, session: SessionDep) -> CheckpointOut:
    """One checkpoint of a job."""
    jobs.get_job(session, job_id, principal)
    row = checkpoints.get_checkpoint(session, job_id, checkpoint_id)
    best = checkpoints.best_of(checkpoints.ordered(session, job_id))
    precision = jobs.training_precision(jobs.get_job(session, job_id))
    return CheckpointOut.of(row, best.id if best else None, precision)


@router.get(
    "/{checkpoint_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **PROBLEMS},
)
def download_checkpoint(
    job_id: str, checkpoint_id: str, principal: ReadKey, session: SessionDep, settings: SettingsDep
) -> StreamingResponse:
    """Download a checkpoint file (load it with `model.checkpoint.load`, weights_only), streamed from storage."""
    jobs.get_job(session, job_id, principal)
    row = checkpoints.get_checkpoint(session, job_id, checkpoint_id)
    size, chunks = checkpoints.open_file(open_storage(settings), row)
    filename = f"{job_id}-epoch{row.epoch}-{row.kind}-{row.id}.pt"
    return download(size, chunks, "application/octet-stream", filename)
