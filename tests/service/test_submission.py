"""Submitting jobs: the stored config, queue positions, Idempotency-Key replays, list pagination."""

from __future__ import annotations

import threading
from pathlib import Path

from harness import TINY, Service

from model.config import preset


def test_submit_stores_the_full_config_and_queue_positions(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    first = service.submit(dataset["id"], seed=3)
    second = service.submit(dataset["id"])
    assert first["status"] == "queued" and first["attempt"] == 0
    assert first["config"] == preset("test", **TINY, seed=3).to_dict()
    assert first["overrides"] == {**TINY, "seed": 3}
    assert (first["queue_position"], second["queue_position"]) == (0, 1)
    assert "1 job(s) ahead" in second["message"]
    response = service.client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test"})
    assert response.status_code == 201 and response.headers["location"] == f"/v1/jobs/{response.json()['id']}"


def test_idempotency_key_replay_returns_the_original_job(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    body = {"dataset_id": dataset["id"], "preset": "test", "overrides": TINY}
    headers = {"Idempotency-Key": "nightly-2026-11-26"}
    first = service.client.post("/v1/jobs", json=body, headers=headers)
    second = service.client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert len(service.client.get("/v1/jobs").json()["items"]) == 1

    # the same key with a different request is refused, and creates nothing
    other = service.client.post("/v1/jobs", json={**body, "overrides": {**TINY, "seed": 9}}, headers=headers)
    assert other.status_code == 422 and other.headers["content-type"] == "application/problem+json"
    assert first.json()["id"] in other.json()["detail"]
    assert len(service.client.get("/v1/jobs").json()["items"]) == 1


def test_concurrent_replays_create_one_job(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    body = {"dataset_id": dataset["id"], "preset": "test", "overrides": TINY}
    ids: list[str] = []

    def submit() -> None:
        response = service.client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "race"})
        assert response.status_code in (200, 201)
        ids.append(response.json()["id"])

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6 and len(set(ids)) == 1
    assert len(service.client.get("/v1/jobs").json()["items"]) == 1


def test_list_jobs_pages_with_a_cursor(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    created = [service.submit(dataset["id"])["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = service.client.get("/v1/jobs", params=params).json()
        assert len(body["items"]) <= 2
        seen.extend(j["id"] for j in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))  # newest first, each once
    queued = service.client.get("/v1/jobs", params={"status": "queued", "limit": 10}).json()
    assert [j["queue_position"] for j in queued["items"]] == [4, 3, 2, 1, 0]


def test_every_invalid_config_field_is_named_at_once(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    overrides = {"hidden_size": 0, "num_steps": 5000, "keep_prob": 2, "world_size": 3}
    response = service.client.post(
        "/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": overrides}
    )
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == [
        "overrides.num_steps",
        "overrides.hidden_size",
        "overrides.keep_prob",
        "overrides.world_size",
    ]
    assert "hidden_size must be an integer in [1, 8,192], got 0" in problem["detail"]
    assert "batch_size 20 is not divisible by world_size 3" in problem["errors"][-1]["message"]
    assert service.client.get("/v1/jobs").json()["items"] == []  # nothing stored
