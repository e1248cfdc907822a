"""Liveness, readiness (database, schema at head, a live worker) and the OpenAPI docs."""

from __future__ import annotations

import signal
from pathlib import Path

from fastapi.testclient import TestClient
from harness import Service, fresh_database, make_settings, wait_for

from app.main import create_app
from app.store import migrate


def test_healthz_and_docs(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    assert service.client.get("/docs").status_code == 200
    spec = service.client.get("/openapi.json").json()
    for path in (
        "/v1/datasets",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/metrics",
    ):
        assert path in spec["paths"]
    # every route says what it does
    for methods in spec["paths"].values():
        for operation in methods.values():
            assert operation.get("description") or operation.get("summary")


def test_readyz_needs_a_worker_heartbeat(service: Service) -> None:
    response = service.client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["failed"] == ["worker"] and body["checks"]["database"] == "ok"
    assert body["checks"]["schema"].startswith("ok")

    worker = service.start_worker()
    wait_for(lambda: service.client.get("/readyz").status_code == 200, timeout=30, what="readiness")
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    # a worker that stopped cleanly no longer counts
    assert service.client.get("/readyz").status_code == 503


def test_readyz_reports_an_unmigrated_schema(tmp_path: Path) -> None:
    with fresh_database(tmp_path) as url, TestClient(create_app(make_settings(tmp_path, database_url=url))) as client:
        body = client.get("/readyz").json()
        assert body["status"] == 503 and body["failed"] == ["schema"]
        assert "run `python -m app migrate`" in body["checks"]["schema"]
        migrate.upgrade(url)
        assert client.get("/readyz").json()["failed"] == ["worker"]


def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=f"sqlite:///{tmp_path}/missing/folder/db.sqlite")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["failed"] == ["database"]
        assert client.get("/healthz").status_code == 200
