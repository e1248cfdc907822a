"""Routes: liveness (`/healthz`) and readiness (`/readyz`: database, schema, a live worker, storage)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.api.deps import EngineDep, SettingsDep
from app.api.problems import Problem
from app.api.schemas import Health, Readiness, problem_responses
from app.store.migrate import current_revisions, head_revisions
from app.store.storage import StorageError, open_storage
from app.store.tables import Worker, utcnow

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:  # on the event loop: it needs no worker thread, so a busy pool never delays it
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses(503),
)
def readyz(engine: EngineDep, settings: SettingsDep) -> Readiness:
    """Ready when the database answers, its schema is at head, a worker heartbeat is recent and
    storage answers."""
    checks: dict[str, str] = {}
    failed: list[str] = []
    try:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            checks["database"] = "ok"
            current, head = current_revisions(engine), head_revisions()
            if current == head:
                checks["schema"] = f"ok (revision {', '.join(sorted(head))})"
            else:
                at = ", ".join(sorted(current)) or "none"
                checks["schema"] = f"at revision {at}, head is {', '.join(sorted(head))}: run `python -m app migrate`"
                failed.append("schema")
            if "schema" not in failed:
                # A worker that beat within one lease is alive; older heartbeats belong to dead ones.
                since = utcnow() - timedelta(seconds=settings.lease_seconds)
                alive = session.scalar(
                    select(func.count())
                    .select_from(Worker)
                    .where(Worker.stopped_at.is_(None), Worker.heartbeat_at >= since)
                )
                if alive:
                    checks["worker"] = f"ok ({alive} alive)"
                else:
                    checks["worker"] = f"no worker heartbeat in the last {settings.lease_seconds:g} s"
                    failed.append("worker")
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        failed.append("database")
    storage = open_storage(settings)
    try:
        storage.check()
        checks["storage"] = f"ok ({storage.kind})"
    except StorageError as exc:
        checks["storage"] = f"{storage.kind}: {exc.detail}"
        failed.append("storage")
    if failed:
        detail = "not ready: " + "; ".join(f"{name}: {checks[name]}" for name in failed)
        raise Problem(503, detail, checks=checks, failed=failed)
    return Readiness(status="ready", checks=checks)
