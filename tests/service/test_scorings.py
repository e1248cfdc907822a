"""Scoring jobs through the queue: a 100,000-line file scored by a real worker equals `/v1/score`
line by line; a worker killed mid-scoring is replaced and the results file comes out the same; bad
inputs get problem+json and store nothing."""

from __future__ import annotations

import json
import math
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import TINY, Service, open_service, stored_state, wait_for, write_corpus
from sqlalchemy.orm import Session

from app.auth import keys
from app.scorings.jobs import INPUT, open_results, result_parts, scoring_key
from app.scorings.lease import claim_next_scoring
from app.store.storage import join, open_storage
from app.store.tables import Scoring
from app.training.datasets import dataset_key
from app.training.queue import register_worker, worker_stopped
from model.network import supports_precision

LINES = 20_000  # 80 chunks: a kill lands mid-file, with chunks done before and after it
CHUNK = 250


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str, str]]:
    """A service with a small trained model; yields (service, job id, dataset id)."""
    tmp = tmp_path_factory.mktemp("scorings")
    service, close = open_service(tmp, scoring_chunk_lines=CHUNK, lease_seconds=2.0, heartbeat_seconds=0.5)
    dataset = service.upload(write_corpus(tmp / "corpus"), name="tiny")
    job = service.submit(dataset["id"], max_max_epoch=1)
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    assert service.job(job["id"])["status"] == "succeeded"
    yield service, job["id"], dataset["id"]
    close()


def text_lines(count: int) -> list[str]:
    """Lines of known words, unknown ones, numbers and blank lines."""
    rng = random.Random(11)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "big", "red", "N", "zebra", "Cat"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) for _ in range(count)]


def submit(service: Service, files: dict[str, Any] | None = None, **form: Any) -> Any:
    return service.client.post("/v1/scorings", data={k: str(v) for k, v in form.items()}, files=files)


def finished(service: Service, scoring_id: str, timeout: float = 300) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = service.client.get(f"/v1/scorings/{scoring_id}").json()
        return body if body["status"] in ("succeeded", "failed", "canceled") else None

    return wait_for(done, timeout, interval=0.2, what=f"scoring {scoring_id}")


def test_a_file_scored_through_the_queue_equals_score_and_survives_a_killed_worker(
    trained: tuple[Service, str, str], tmp_path: Path
) -> None:
    service, job_id, _ = trained
    text = "".join(f"{line}\n" for line in text_lines(LINES))
    files = {"file": ("lines.txt", text.encode(), "text/plain")}

    # First run: the worker is killed mid-scoring, another one finishes it.
    first = submit(service, files, model=job_id)
    assert first.status_code == 201, first.text
    scoring = first.json()
    assert scoring["status"] == "queued" and scoring["total_lines"] == LINES and scoring["results_url"] is None
    doomed = service.start_worker()

    def midway() -> bool:
        done = service.client.get(f"/v1/scorings/{scoring['id']}").json()["lines_done"]
        return bool(CHUNK * 4 <= done < LINES // 2)

    wait_for(midway, 120, interval=0.02, what="the scoring to be under way")
    doomed.signal(signal.SIGKILL)
    doomed.wait(30)
    stopped_at = service.client.get(f"/v1/scorings/{scoring['id']}").json()["lines_done"]
    assert 0 < stopped_at < LINES
    rescuer = service.start_worker()
    resumed = finished(service, scoring["id"])
    assert resumed["status"] == "succeeded", resumed
    assert resumed["attempt"] == 2 and resumed["lines_done"] == LINES and resumed["fraction"] == 1.0

    # Second run, uninterrupted: the same file, byte for byte.
    second = submit(service, files, model=job_id).json()
    assert finished(service, second["id"])["status"] == "succeeded"
    rescuer.stop()
    resumed_file = service.client.get(resumed["results_url"])
    assert resumed_file.status_code == 200
    assert resumed_file.headers["content-type"].startswith("application/x-ndjson")
    assert resumed_file.content == service.client.get(f"/v1/scorings/{second['id']}/results").content

    # Line by line, the numbers of /v1/score.
    records = [json.loads(line) for line in resumed_file.text.splitlines()]
    assert [r["line"] for r in records] == list(range(1, LINES + 1))
    lines = text_lines(LINES)
    batch = service.settings.max_sentences
    tokens = unk = 0
    for start in range(0, LINES, batch):
        body = {"model": job_id, "sentences": lines[start : start + batch]}
        scored = service.client.post("/v1/score", json=body).json()["sentences"]
        for record, direct in zip(records[start : start + batch], scored, strict=True):
            assert record["num_tokens"] == direct["num_tokens"] and record["num_unk"] == direct["num_unk"]
            assert math.isclose(record["total_logprob"], direct["total_logprob"], rel_tol=1e-5, abs_tol=1e-4)
            assert math.isclose(record["perplexity"], direct["perplexity"], rel_tol=1e-5)
            tokens, unk = tokens + direct["num_tokens"], unk + direct["num_unk"]
    aggregate = resumed["aggregate"]
    assert aggregate["num_sentences"] == LINES and aggregate["num_tokens"] == tokens and aggregate["num_unk"] == unk
    total = math.fsum(r["total_logprob"] for r in records)
    assert math.isclose(aggregate["corpus_perplexity"], math.exp(-total / tokens), rel_tol=1e-6)


def test_a_dataset_split_cancel_and_bad_inputs(trained: tuple[Service, str, str]) -> None:
    service, job_id, dataset_id = trained
    before = stored_state(service)
    files = {"file": ("x.txt", b"the cat\n", "text/plain")}
    cases = [
        (submit(service, files, model="job_nope"), 404, "job_nope"),
        (submit(service, model=job_id), 422, "file"),
        (submit(service, files, model=job_id, dataset_id=dataset_id, split="test"), 422, "file"),
        (submit(service, model=job_id, dataset_id=dataset_id, split="dev"), 422, "split"),
        (submit(service, model=job_id, dataset_id="ds_nope", split="test"), 404, "ds_nope"),
        (submit(service, {"file": ("x.txt", b"\xff\xfe", "text/plain")}, model=job_id), 422, "UTF-8"),
        (submit(service, {"file": ("x.txt", ("a " * 1001).encode(), "text/plain")}, model=job_id), 422, "line 1"),
        (submit(service, {"file": ("x.txt", b"", "text/plain")}, model=job_id), 422, "no lines"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert fragment in response.json()["detail"]
    assert stored_state(service) == before
    assert service.client.get("/v1/scorings/scr_nope").status_code == 404
    # Lines end at "\n" only (a "\r" stays in its line); a final line needs no newline.
    mixed = submit(service, {"file": ("x.txt", b"the cat\r\nsat\n\nthe end", "text/plain")}, model=job_id).json()
    assert mixed["total_lines"] == 4
    storage = open_storage(service.settings)
    assert storage.local_path(join(scoring_key(mixed["id"]), INPUT)).read_bytes().endswith(b"end")
    assert service.client.post(f"/v1/scorings/{mixed['id']}/cancel").json()["status"] == "canceled"

    # No worker runs now: a queued scoring is canceled at once, and has no results.
    queued = submit(service, model=job_id, dataset_id=dataset_id, split="test", score_eos="false").json()
    test_lines = storage.local_path(join(dataset_key(dataset_id), "test.txt")).read_text().splitlines()
    assert queued["total_lines"] == len(test_lines) and queued["options"]["score_eos"] is False
    assert service.client.get(f"/v1/scorings/{queued['id']}/results").status_code == 409
    canceled = service.client.post(f"/v1/scorings/{queued['id']}/cancel").json()
    assert canceled["status"] == "canceled"
    assert service.client.post(f"/v1/scorings/{queued['id']}/cancel").json()["status"] == "canceled"
    listed = service.client.get("/v1/scorings", params={"limit": 1}).json()
    assert listed["items"][0]["id"] == queued["id"] and listed["next_cursor"] is not None

    # A dataset split scored by a worker.
    again = submit(service, model=job_id, dataset_id=dataset_id, split="test").json()
    worker = service.start_worker()
    done = finished(service, again["id"], 120)
    worker.stop()
    assert done["status"] == "succeeded" and done["aggregate"]["num_sentences"] == len(test_lines)
    assert service.client.post(f"/v1/scorings/{again['id']}/cancel").status_code == 409

    # Delete: 409 while queued (nothing is removed), then gone with its folder once finished.
    pending = submit(service, model=job_id, dataset_id=dataset_id, split="test").json()
    conflict = service.client.delete(f"/v1/scorings/{pending['id']}")
    assert conflict.status_code == 409 and "cancel it" in conflict.json()["detail"]
    assert service.client.get(f"/v1/scorings/{pending['id']}").json()["status"] == "queued"
    with Session(service.engine) as session:
        row = session.get(Scoring, again["id"])
        assert row is not None
        size, chunks = open_results(storage, row)
    results = b"".join(chunks)
    assert size == len(results) and results == service.client.get(f"/v1/scorings/{again['id']}/results").content
    assert [first for first, _ in result_parts(storage, again["id"])] == list(range(0, len(test_lines), CHUNK))
    assert service.client.delete(f"/v1/scorings/{again['id']}").status_code == 204
    assert storage.list(scoring_key(again["id"])) == [] and result_parts(storage, again["id"]) == []
    assert storage.exists(join(scoring_key(mixed["id"]), INPUT))  # an uploaded text goes with its scoring
    assert service.client.delete(f"/v1/scorings/{mixed['id']}").status_code == 204
    assert storage.list(scoring_key(mixed["id"])) == []
    assert service.client.get(f"/v1/scorings/{again['id']}").status_code == 404
    assert service.client.get(f"/v1/scorings/{again['id']}/results").status_code == 404
    assert service.client.delete(f"/v1/scorings/{again['id']}").status_code == 404
    service.client.post(f"/v1/scorings/{pending['id']}/cancel")
    assert service.client.delete(f"/v1/scorings/{pending['id']}").status_code == 204


def test_a_bf16_scoring_waits_for_a_worker_with_bf16_and_equals_score_in_bf16(tmp_path: Path) -> None:
    service, close = open_service(tmp_path, max_upload_bytes=64 * 1024)
    try:
        dataset = service.upload(write_corpus(tmp_path / "corpus"), name="tiny")
        job = service.submit(dataset["id"], max_max_epoch=1)
        assert service.start_worker("--burst").wait(120) == 0
        before = stored_state(service)
        too_big = submit(service, {"file": ("big.txt", b"the cat\n" * 10_000, "text/plain")}, model=job["id"])
        assert too_big.status_code == 413 and "at most 65,536" in too_big.json()["detail"]
        assert stored_state(service) == before
        lines = text_lines(300)
        files = {"file": ("lines.txt", ("\n".join(lines) + "\n").encode(), "text/plain")}
        plain = submit(service, files, model=job["id"]).json()
        low = submit(service, files, model=job["id"], precision="bf16").json()
        assert plain["options"]["precision"] == "fp32" and low["options"]["precision"] == "bf16"
        refused = submit(service, files, model=job["id"], precision="fp16")
        assert refused.status_code == 422 and "precision" in refused.text

        # A worker without bf16 takes the fp32 scoring and leaves the bf16 one queued, which says why.
        cpu_only = register_worker(service.engine, None, ["cpu"])
        claimed = claim_next_scoring(service.engine, cpu_only, 30.0, ["cpu"])
        assert claimed is not None and claimed.id == plain["id"]
        assert claim_next_scoring(service.engine, cpu_only, 30.0, ["cpu"]) is None
        waiting = service.client.get(f"/v1/scorings/{low['id']}").json()
        assert waiting["status"] == "queued" and waiting["message"] == "waiting for a worker with bf16"
        worker_stopped(service.engine, cpu_only)
        service.client.post(f"/v1/scorings/{plain['id']}/cancel")

        if not supports_precision(torch.device("cpu"), "bf16"):
            return  # this machine's workers cannot run it either
        worker = service.start_worker()
        done = finished(service, low["id"], 120)
        worker.stop()
        assert done["status"] == "succeeded", done
        records = [json.loads(r) for r in service.client.get(f"/v1/scorings/{low['id']}/results").text.splitlines()]
        body = {"model": job["id"], "sentences": lines, "precision": "bf16"}
        direct = service.client.post("/v1/score", json=body).json()
        fp32 = service.client.post("/v1/score", json={**body, "precision": "fp32"}).json()
        assert direct["precision"] == "bf16"
        for record, sentence in zip(records, direct["sentences"], strict=True):
            assert math.isclose(record["total_logprob"], sentence["total_logprob"], rel_tol=1e-5, abs_tol=1e-4)
        assert [r["total_logprob"] for r in records] != [s["total_logprob"] for s in fp32["sentences"]]
    finally:
        close()


def test_scoring_texts_and_results_count_in_the_keys_quotas(tmp_path: Path) -> None:
    limit = 1_000_000
    service, close = open_service(tmp_path, auth=True, max_stored_bytes_per_key=limit, max_queued_jobs_per_key=2)
    try:
        service.client.headers["Authorization"] = f"Bearer {keys.create_key(service.engine, 'u', 'write')[1]}"
        dataset = service.upload(write_corpus(tmp_path / "corpus"), name="tiny")
        job = service.submit(dataset["id"], max_max_epoch=1)
        assert service.start_worker("--burst").wait(120) == 0
        checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        used = dataset["size_bytes"] + sum(c["size_bytes"] for c in checkpoints)
        assert used < 100_000

        def text(size: int) -> dict[str, Any]:
            return {"file": ("t.txt", b"the cat\n" * (size // 8), "text/plain")}

        first = submit(service, text(600_000), model=job["id"]).json()
        assert first["size_bytes"] == 600_000
        # 500,000 more bytes fit beside the key's dataset and checkpoints, not beside the first text too.
        before = stored_state(service)
        over = submit(service, text(500_000), model=job["id"])
        assert over.status_code == 429, over.text
        assert f"this key stores {used + 600_000:,} bytes" in over.json()["detail"]
        assert stored_state(service) == before

        # Queued scorings and training jobs share the key's queue limit.
        second = submit(service, text(800), model=job["id"]).json()
        for refused in (
            submit(service, text(8), model=job["id"]),
            service.client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": TINY}),
        ):
            assert refused.status_code == 429 and "2 queued job(s) and scoring(s)" in refused.json()["detail"]

        # Deleting a scoring frees its bytes and its place in the queue.
        service.client.post(f"/v1/scorings/{first['id']}/cancel")
        assert service.client.delete(f"/v1/scorings/{first['id']}").status_code == 204
        third = submit(service, text(500_000), model=job["id"]).json()

        # Results files count once written.
        assert service.start_worker("--burst").wait(120) == 0
        done = [finished(service, s["id"]) for s in (second, third)]
        results = [len(service.client.get(f"/v1/scorings/{s['id']}/results").content) for s in done]
        assert [s["size_bytes"] for s in done] == [800 + results[0], 500_000 + results[1]]
        stored = used + 500_800 + sum(results)
        assert stored > limit  # results are never refused: the key is over its limit now
        over = submit(service, text(limit), model=job["id"])
        assert f"this key stores {stored:,} bytes" in over.json()["detail"]
        # ... and a dataset split, which uploads nothing, is refused too while it is over.
        split = submit(service, model=job["id"], dataset_id=dataset["id"], split="valid")
        assert split.status_code == 429 and f"stores {stored:,} bytes" in split.json()["detail"]
        assert f"over its limit of {limit:,} bytes" in split.json()["detail"]
    finally:
        close()
