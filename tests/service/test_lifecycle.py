"""One job through the real app and a real worker process: queued -> running -> succeeded, then
its metric history, checkpoints, event stream and the operations a finished job allows."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import TERMINAL, Service, WorkerProcess, open_service, write_corpus

from app.store.storage import open_storage
from app.training.checkpoints import checkpoint_key, job_key
from model import checkpoint
from model.data import Corpus

EPOCHS = 3


@dataclass
class Trained:
    service: Service
    worker: WorkerProcess
    corpus: Path
    dataset: dict[str, Any]
    job: dict[str, Any]
    statuses: list[str] = field(default_factory=list)
    events: str = ""


def parse_events(text: str) -> list[dict[str, str]]:
    """Server-Sent Events as dicts of their fields (event, data, id)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, sep, value = line.partition(":")
            if sep and name:
                fields[name] = value.removeprefix(" ")
        if "event" in fields:
            events.append(fields)
    return events


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A 3-epoch job trained by a worker while the test watches its status and its event stream."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    service, close = open_service(tmp, keep_last_checkpoints=1)
    corpus = write_corpus(tmp / "corpus")
    dataset = service.upload(corpus, name="tiny")
    job = service.submit(dataset["id"], max_max_epoch=EPOCHS, keep_prob=0.9)
    collected: dict[str, str] = {}

    def follow() -> None:
        with service.client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
            collected["text"] = "".join(response.iter_text())

    follower = threading.Thread(target=follow)
    follower.start()
    statuses = [service.job(job["id"])["status"]]
    worker = service.start_worker()
    deadline = time.monotonic() + 90
    while statuses[-1] not in TERMINAL and time.monotonic() < deadline:
        status = service.job(job["id"])["status"]
        if status != statuses[-1]:
            statuses.append(status)
        time.sleep(0.02)
    follower.join(timeout=30)
    assert statuses[-1] == "succeeded", f"{statuses}\n{worker.log()}"
    yield Trained(service, worker, corpus, dataset, service.job(job["id"]), statuses, collected.get("text", ""))
    close()


def test_job_goes_queued_running_succeeded(trained: Trained) -> None:
    job = trained.job
    assert trained.statuses == ["queued", "running", "succeeded"]
    assert job["attempt"] == 1 and job["error"] is None and job["queue_position"] is None
    assert job["progress"]["epoch"] == EPOCHS and job["progress"]["fraction"] == 1.0
    assert job["progress"]["phase"] == "done"
    assert job["test_ppl"] > 1 and job["best_valid_ppl"] <= job["latest_valid_ppl"]
    assert job["started_at"] <= job["finished_at"]
    assert job["config"]["max_max_epoch"] == EPOCHS and job["config"]["hidden_size"] == 16


def test_upload_reports_the_counts_training_reads(trained: Trained) -> None:
    corpus = Corpus.load(trained.corpus)
    ds = trained.dataset
    assert ds["name"] == "tiny" and ds["source"] == "upload"
    assert (ds["train_tokens"], ds["valid_tokens"], ds["test_tokens"]) == (
        corpus.train.numel(),
        corpus.valid.numel(),
        corpus.test.numel(),
    )
    assert ds["vocab_size"] == len(corpus.vocab)
    assert trained.service.client.get(f"/v1/datasets/{ds['id']}").json() == ds


def test_metric_history_in_mlflow_shape(trained: Trained) -> None:
    svc, job = trained.service, trained.job
    steps = job["progress"]["steps"]
    for key in ("train_ppl", "valid_ppl"):
        points = svc.metrics(job["id"], key)
        assert [p["step"] for p in points] == [steps * e for e in range(1, EPOCHS + 1)]
        assert all(set(p) == {"key", "value", "step", "timestamp"} and p["key"] == key for p in points)
    assert svc.metrics(job["id"], "valid_ppl")[-1]["value"] == job["latest_valid_ppl"]
    assert min(p["value"] for p in svc.metrics(job["id"], "valid_ppl")) == job["best_valid_ppl"]
    assert [p["value"] for p in svc.metrics(job["id"], "test_ppl")] == [job["test_ppl"]]
    # lr follows the schedule: 1.0 for max_epoch=1 epoch, then halved every epoch
    epoch_lr = [p["value"] for p in svc.metrics(job["id"], "lr") if p["step"] % steps == 0]
    assert epoch_lr == [1.0, 0.5, 0.25]
    # the seed's ten progress lines per epoch are kept as step-level points
    running = svc.metrics(job["id"], "train_ppl_running")
    assert 9 * EPOCHS <= len(running) <= 11 * EPOCHS
    assert [p["step"] for p in running] == sorted(p["step"] for p in running)


def test_metric_pages_cover_the_history_once(trained: Trained) -> None:
    client, job_id = trained.service.client, trained.job["id"]
    everything = trained.service.metrics(job_id)
    pages, token = [], None
    while True:
        params: dict[str, Any] = {"limit": 7} | ({"page_token": token} if token else {})
        body = client.get(f"/v1/jobs/{job_id}/metrics", params=params).json()
        pages.extend(body["metrics"])
        token = body["next_page_token"]
        if token is None:
            break
    assert pages == everything and len(everything) > 7
    assert {p["key"] for p in everything} == {"train_ppl_running", "wps", "lr", "train_ppl", "valid_ppl", "test_ppl"}


def test_metrics_downsampled_for_charts(trained: Trained) -> None:
    client, job_id = trained.service.client, trained.job["id"]
    full = trained.service.metrics(job_id, "train_ppl_running")
    body = client.get(f"/v1/jobs/{job_id}/metrics", params={"key": "train_ppl_running", "max_points": 5}).json()
    points = body["metrics"]
    assert 2 <= len(points) <= 5 and body["next_page_token"] is None
    assert points[0] == full[0] and points[-1] == full[-1]
    assert all(p in full for p in points)


def test_checkpoints_listed_with_best_marked_and_retention(trained: Trained) -> None:
    svc, job = trained.service, trained.job
    body = svc.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()
    items = body["items"]
    # keep_last_checkpoints=1: the best and the last survive, nothing else
    assert 1 <= len(items) <= 2
    last = items[-1]
    assert last["kind"] == "final" and last["epoch"] == EPOCHS and last["valid_ppl"] == job["latest_valid_ppl"]
    best = [c for c in items if c["is_best"]]
    assert len(best) == 1 and best[0]["id"] == body["best_id"] and best[0]["valid_ppl"] == job["best_valid_ppl"]
    stored = [entry.key for entry in open_storage(svc.settings).list(job_key(job["id"]))]
    assert stored == sorted(checkpoint_key(job["id"], c["id"]) for c in items)


def test_checkpoint_download_is_a_loadable_checkpoint(trained: Trained, tmp_path: Path) -> None:
    svc, job = trained.service, trained.job
    final = svc.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"][-1]
    assert svc.client.get(f"/v1/jobs/{job['id']}/checkpoints/{final['id']}").json() == final
    response = svc.client.get(final["download_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    assert len(response.content) == final["size_bytes"]
    path = tmp_path / "final.pt"
    path.write_bytes(response.content)
    payload = checkpoint.load(path)
    assert payload["config"] == job["config"]
    assert payload["train_state"]["test_ppl"] == job["test_ppl"]
    assert [h["valid_ppl"] for h in payload["train_state"]["history"]][-1] == job["latest_valid_ppl"]


def test_event_stream_follows_the_job_to_its_end(trained: Trained) -> None:
    events = parse_events(trained.events)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "end" and json.loads(events[-1]["data"])["status"] == "succeeded"
    statuses = [json.loads(e["data"])["status"] for e in events if e["event"] == "status"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    metric_events = [json.loads(e["data"]) for e in events if e["event"] == "metric"]
    assert metric_events == trained.service.metrics(trained.job["id"])
    # a finished job's stream replays its history and ends; Last-Event-ID resumes after an id
    replay = parse_events(trained.service.client.get(f"/v1/jobs/{trained.job['id']}/events").text)
    assert [e["event"] for e in replay].count("metric") == len(metric_events)
    last_id = [e for e in replay if e["event"] == "metric"][-2]["id"]
    resumed = trained.service.client.get(f"/v1/jobs/{trained.job['id']}/events", headers={"Last-Event-ID": last_id})
    assert [e["event"] for e in parse_events(resumed.text)] == ["metric", "status", "end"]


def test_readyz_sees_the_live_worker(trained: Trained) -> None:
    response = trained.service.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready" and response.json()["checks"]["worker"].startswith("ok")


def test_list_jobs_filters_by_status(trained: Trained) -> None:
    client = trained.service.client
    succeeded = client.get("/v1/jobs", params={"status": "succeeded"}).json()["items"]
    assert trained.job["id"] in [j["id"] for j in succeeded]
    assert client.get("/v1/jobs", params={"status": ["queued", "running"]}).json()["items"] == []


def test_cancel_of_a_finished_job_is_a_conflict(trained: Trained) -> None:
    svc, job_id = trained.service, trained.job["id"]
    response = svc.client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "already succeeded" in response.json()["detail"]
    assert svc.job(job_id)["status"] == "succeeded"
