"""A job's log: the worker writes structured lines (seed's progress lines, epoch summaries,
checkpoints, start, end) that `GET /v1/jobs/{id}/logs` pages and `?follow=true` streams; and the
validation and test passes publish their progress as training does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Service, open_service, write_corpus
from sqlalchemy import func, select

from app.store.storage import open_storage
from app.store.tables import JobLog
from app.training.attempt import Attempt
from app.training.queue import claim_next
from model.train import EvalProgress, StepProgress
from service.test_lifecycle import parse_events
from worker.runner import Heartbeat, JobCallbacks

EPOCHS = 2


@dataclass
class Logged:
    service: Service
    job: dict[str, Any]
    followed: str


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """A job trained by a real worker while a client follows its log from before it starts."""
    tmp = tmp_path_factory.mktemp("logs")
    service, close = open_service(tmp)
    dataset = service.upload(write_corpus(tmp / "corpus"))
    job = service.submit(dataset["id"], max_max_epoch=EPOCHS)
    collected: dict[str, str] = {}

    def follow() -> None:
        with service.client.stream("GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}) as response:
            collected["text"] = "".join(response.iter_text())

    follower = threading.Thread(target=follow)
    follower.start()
    worker = service.start_worker("--once")
    assert worker.wait(timeout=120) == 0, worker.log()
    follower.join(timeout=30)
    assert not follower.is_alive()
    yield Logged(service, service.wait_status(job["id"], ("succeeded",)), collected.get("text", ""))
    close()


def all_lines(service: Service, job_id: str) -> list[dict[str, Any]]:
    response = service.client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    return body["items"]


def test_the_worker_logs_progress_epochs_checkpoints_and_the_end(logged: Logged) -> None:
    job = logged.job
    lines = all_lines(logged.service, job["id"])
    messages = [line["message"] for line in lines]
    assert messages[0].startswith("attempt 1 of 3: starting on cpu (worker ")
    assert all(set(line) == {"id", "time", "level", "attempt", "worker_id", "message"} for line in lines)
    assert {(line["level"], line["attempt"], line["worker_id"]) for line in lines} == {("INFO", 1, job["worker_id"])}
    assert [line["id"] for line in lines] == sorted(line["id"] for line in lines)
    for epoch in range(1, EPOCHS + 1):
        assert f"Epoch: {epoch} Learning rate: {1.0 if epoch == 1 else 0.5:.3f}" in messages
        assert f"Epoch: {epoch} Valid Perplexity: " in "\n".join(messages)
    # the seed's ten progress lines an epoch: "fraction perplexity: p speed: w wps"
    progress = [m for m in messages if " perplexity: " in m and m.endswith(" wps")]
    assert 9 * EPOCHS <= len(progress) <= 11 * EPOCHS
    valid = [m for m in messages if "Valid Perplexity" in m][-1]
    assert float(valid.rsplit(" ", 1)[1]) == pytest.approx(job["latest_valid_ppl"], abs=1e-3)
    assert messages[-2] == f"Test Perplexity: {job['test_ppl']:.3f}"
    assert messages[-1].startswith("final checkpoint ckpt_") and messages[-1].endswith("succeeded")
    assert sum("checkpoint ckpt_" in m and "written: epoch" in m for m in messages) == EPOCHS


def test_pages_cover_the_log_once(logged: Logged) -> None:
    client, job_id = logged.service.client, logged.job["id"]
    everything = all_lines(logged.service, job_id)
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = client.get(f"/v1/jobs/{job_id}/logs", params={"limit": 5} | ({"cursor": cursor} if cursor else {}))
        pages.extend(body.json()["items"])
        cursor = body.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == everything and len(everything) > 5


def test_follow_streamed_every_line_then_the_end(logged: Logged) -> None:
    events = parse_events(logged.followed)
    assert [e["event"] for e in events][-1] == "end"
    assert json.loads(events[-1]["data"]) == {"id": logged.job["id"], "status": "succeeded"}
    streamed = [json.loads(e["data"]) for e in events if e["event"] == "log"]
    assert streamed == all_lines(logged.service, logged.job["id"])
    assert [e["id"] for e in events if e["event"] == "log"] == [str(line["id"]) for line in streamed]
    # following a finished job replays from the cursor (or Last-Event-ID) and ends
    third = str(streamed[2]["id"])
    url = f"/v1/jobs/{logged.job['id']}/logs"
    resumed = parse_events(logged.service.client.get(url, params={"follow": "true", "cursor": third}).text)
    assert [json.loads(e["data"]) for e in resumed if e["event"] == "log"] == streamed[3:]
    resumed = parse_events(
        logged.service.client.get(url, params={"follow": True}, headers={"Last-Event-ID": third}).text
    )
    assert len([e for e in resumed if e["event"] == "log"]) == len(streamed) - 3


@pytest.mark.parametrize("after", ["2147483647", "2147483648", "77867450579", "9" * 18])
def test_an_id_past_every_row_is_the_end_of_the_history(logged: Logged, after: str) -> None:
    """Past PostgreSQL's integer range too: an id no row can have names the end, not a database error."""
    client, job_id = logged.service.client, logged.job["id"]
    page = client.get(f"/v1/jobs/{job_id}/logs", params={"cursor": after})
    assert page.status_code == 200 and page.json() == {"items": [], "next_cursor": None}
    followed = parse_events(client.get(f"/v1/jobs/{job_id}/logs", params={"follow": True, "cursor": after}).text)
    assert [e["event"] for e in followed] == ["end"]
    resumed = client.get(f"/v1/jobs/{job_id}/logs", params={"follow": True}, headers={"Last-Event-ID": after})
    assert [e["event"] for e in parse_events(resumed.text)] == ["end"]
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", params={"page_token": after})
    assert metrics.status_code == 200 and metrics.json()["metrics"] == []
    events = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": after})
    assert "event: metric" not in events.text and "event: end" in events.text


def test_bad_requests_for_logs(logged: Logged) -> None:
    client = logged.service.client
    missing = client.get("/v1/jobs/job_missing/logs")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/jobs/job_missing/logs", params={"follow": "true"}).status_code == 404
    for params in (
        {"cursor": "abc"},
        {"cursor": "\u00b2"},
        {"cursor": "1" * 19},
        {"limit": 0},
        {"limit": 5000},
        {"follow": "maybe"},
    ):
        response = client.get(f"/v1/jobs/{logged.job['id']}/logs", params=params)
        assert response.status_code == 422, (params, response.text)


def test_deleting_a_job_deletes_its_log(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=1)
    assert service.start_worker("--once").wait(timeout=120) == 0
    assert all_lines(service, job["id"])
    assert service.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert service.client.get(f"/v1/jobs/{job['id']}/logs").status_code == 404
    with service.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(JobLog)) == 0


def test_validation_and_test_progress_reach_the_job(service: Service, tiny_corpus: Path) -> None:
    """The worker's callbacks publish the evaluation passes' progress with the attempt's writes."""
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"], max_max_epoch=1)
    claimed = claim_next(service.engine, "w-test", lease_seconds=60)
    assert claimed is not None and claimed.id == job["id"]
    attempt = Attempt(service.engine, claimed.id, claimed.attempt, "w-test", 60, open_storage(service.settings))
    heartbeat = Heartbeat(attempt, service.engine, "w-test", 60)  # not started: nothing runs beside the test
    callbacks = JobCallbacks(attempt, heartbeat, threading.Event(), service.settings, epochs=1)
    callbacks.on_step(StepProgress(epoch=1, step=10, steps=10, lr=1.0, ppl=50.0, wps=1000.0))
    seen = []
    for step in (1, 7):  # the first step of a pass is published at once, the last too
        callbacks.on_eval_step(EvalProgress("validate", step, 7))
        seen.append(service.job(job["id"])["progress"])
    callbacks.on_eval_step(EvalProgress("test", 1, 3))
    seen.append(service.job(job["id"])["progress"])
    assert [(p["phase"], p["step"], p["steps"]) for p in seen] == [
        ("validate", 1, 7),
        ("validate", 7, 7),
        ("test", 1, 3),
    ]
    assert [p["fraction"] for p in seen] == [pytest.approx(1 / 7), 1.0, pytest.approx(1 / 3)]
    assert all(p["epoch"] == 1 and p["epochs"] == 1 and p["wps"] == 1000.0 for p in seen)
