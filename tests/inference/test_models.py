"""Models and aliases: listing, what a job id / checkpoint id / alias serves, a running job, the
bounded LRU cache, safe loading, and missing or corrupt checkpoint files (409, the server serves on)."""

from __future__ import annotations

import io
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from sqlalchemy import update

from app.errors import Conflict
from app.inference.registry import ModelCache, ModelRef
from app.store.db import write_session
from app.store.storage import LocalStorage
from app.store.tables import Job
from app.training.checkpoints import checkpoint_key
from model.checkpoint import load

from .conftest import InferenceService, problem


def score_first(service: InferenceService, model: str, text: str = "the cat sat") -> list[float]:
    response = service.client.post("/v1/score", json={"model": model, "sentences": [text]})
    assert response.status_code == 200, response.text
    logprobs: list[float] = response.json()["sentences"][0]["logprobs"]
    return logprobs


def test_list_models_in_openai_shape(inference_service: InferenceService) -> None:
    empty_job, _ = inference_service.add_job("queued", [])
    body = inference_service.client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {card["id"]: card for card in body["data"]}
    card = cards[inference_service.job_id]
    assert card["object"] == "model" and isinstance(card["created"], int) and card["owned_by"]
    assert card["checkpoint_id"] == inference_service.best_checkpoint_id
    assert card["job_status"] == "succeeded" and card["epoch"] == 3 and card["valid_ppl"] > 1
    assert empty_job not in cards  # nothing to serve yet
    response = inference_service.client.get(f"/v1/models/{inference_service.job_id}")
    assert response.json()["checkpoint_id"] == inference_service.best_checkpoint_id


def test_a_job_serves_its_best_checkpoint_and_any_checkpoint_can_be_named(inference_service: InferenceService) -> None:
    run = inference_service.run
    # epoch 1 validated better than epoch 2 here: the job serves epoch 1, not the latest
    job_id, (first, second) = inference_service.add_job("succeeded", [(run.files[0], 1, 50.0), (run.files[1], 2, 60.0)])
    assert inference_service.client.get(f"/v1/models/{job_id}").json()["checkpoint_id"] == first
    assert score_first(inference_service, job_id) == score_first(inference_service, first)
    assert score_first(inference_service, second) != score_first(inference_service, first)


def test_a_running_job_is_served_from_its_latest_checkpoint(inference_service: InferenceService) -> None:
    run = inference_service.run
    job_id, (only,) = inference_service.add_job("running", [(run.files[0], 0, None)])  # mid-epoch, not validated
    card = inference_service.client.get(f"/v1/models/{job_id}").json()
    assert card["checkpoint_id"] == only and card["job_status"] == "running"
    assert score_first(inference_service, job_id) == score_first(inference_service, only)
    cards = {c["id"]: c for c in inference_service.client.get("/v1/models").json()["data"]}
    assert cards[job_id]["checkpoint_id"] == only


def test_an_alias_is_set_and_deleted_while_a_worker_writes(inference_service: InferenceService) -> None:
    """A worker's write (a heartbeat, a progress row) committing while an alias is set or deleted:
    the request waits for it and succeeds. On SQLite, a transaction that read before a concurrent
    commit can no longer write ("database is locked" at once, which was a 500)."""
    client, job_id = inference_service.client, inference_service.job_id
    for method, body in (("PUT", {"target": job_id}), ("DELETE", None)):
        locked, release = threading.Event(), threading.Event()

        def worker_writes(locked: threading.Event = locked, release: threading.Event = release) -> None:
            with write_session(inference_service.engine) as session:
                session.execute(update(Job).where(Job.id == job_id).values(notes="written by a worker"))
                locked.set()
                release.wait(10)

        writer = threading.Thread(target=worker_writes)
        writer.start()
        assert locked.wait(10)
        threading.Timer(0.3, release.set).start()  # the worker commits while the request is under way
        response = client.request(method, "/v1/models/aliases/during-a-write", json=body)
        writer.join(10)
        assert response.status_code == (200 if method == "PUT" else 204), response.text
    assert client.get("/v1/models/aliases/during-a-write").status_code == 404


def test_aliases_can_be_set_moved_listed_and_deleted(inference_service: InferenceService) -> None:
    client = inference_service.client
    response = client.put("/v1/models/aliases/ptb-small", json={"target": inference_service.job_id})
    assert response.status_code == 200, response.text
    assert response.json()["target"] == inference_service.job_id
    assert score_first(inference_service, "ptb-small") == score_first(inference_service, inference_service.job_id)
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards["ptb-small"]["checkpoint_id"] == inference_service.best_checkpoint_id
    assert "ptb-small" in cards[inference_service.job_id]["aliases"]
    # move it to a checkpoint
    other = next(c for c in inference_service.checkpoint_ids if c != inference_service.best_checkpoint_id)
    assert client.put("/v1/models/aliases/ptb-small", json={"target": other}).status_code == 200
    assert client.get("/v1/models/aliases/ptb-small").json()["target"] == other
    assert score_first(inference_service, "ptb-small") == score_first(inference_service, other)
    assert "ptb-small" in [a["name"] for a in client.get("/v1/models/aliases").json()["data"]]
    assert client.delete("/v1/models/aliases/ptb-small").status_code == 204
    problem(client.get("/v1/models/aliases/ptb-small"), 404)
    problem(client.delete("/v1/models/aliases/ptb-small"), 404)
    problem(client.post("/v1/score", json={"model": "ptb-small", "sentences": ["a"]}), 404)


@pytest.mark.parametrize(
    ("name", "target", "status"),
    [
        ("default", "job_doesnotexist", 404),
        ("default", "ckpt_doesnotexist", 404),
        ("default", "something", 404),
        ("job_x", "JOB", 422),  # would shadow job ids
        ("-bad", "JOB", 422),
        ("has space", "JOB", 422),
        ("aliases", "JOB", 422),
    ],
)
def test_bad_alias_requests(inference_service: InferenceService, name: str, target: str, status: int) -> None:
    target = inference_service.job_id if target == "JOB" else target
    problem(inference_service.client.put(f"/v1/models/aliases/{name}", json={"target": target}), status)


def test_unknown_models_are_404(inference_service: InferenceService) -> None:
    client = inference_service.client
    for name in ("job_nope", "ckpt_nope", "no-such-alias"):
        body = problem(client.post("/v1/score", json={"model": name, "sentences": ["the cat"]}), 404)
        assert name in body["detail"]
        problem(client.post("/v1/generate", json={"model": name, "prompt": "the"}), 404)
        problem(client.post("/v1/completions", json={"model": name, "prompt": "the"}), 404)
        problem(client.get(f"/v1/models/{name}"), 404)
    empty_job, _ = inference_service.add_job("queued", [])
    body = problem(client.post("/v1/score", json={"model": empty_job, "sentences": ["a"]}), 409)
    assert "no checkpoint yet" in body["detail"]


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class NotAllowed:
    """Pickled into a file: `weights_only=True` must refuse to build it."""


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "checkpoint file missing"),
        (b"", "unusable"),
        (b"this is not a checkpoint", "unusable"),
        ("truncated", "unusable"),
        (_torch_bytes({"format": "something-else"}), "unusable"),
        (_torch_bytes({"format": "lstm-lm-checkpoint/1", "code": NotAllowed()}), "unusable"),
        ("wrong-shapes", "unusable"),
    ],
)
def test_missing_or_corrupt_checkpoint_files_are_409_and_the_server_keeps_serving(
    inference_service: InferenceService, content: bytes | str | None, reason: str
) -> None:
    run = inference_service.run
    if content == "truncated":
        content = run.files[0].read_bytes()[:1000]
    elif content == "wrong-shapes":
        payload = load(run.files[0])
        payload["model"] = {k: v[..., :1] for k, v in payload["model"].items()}
        content = _torch_bytes(payload)
    job_id, (checkpoint_id,) = inference_service.add_job("succeeded", [(b"placeholder", 1, 10.0)])
    key = checkpoint_key(job_id, checkpoint_id)
    assert content is None or isinstance(content, bytes)
    inference_service.write_checkpoint(key, content)
    client = inference_service.client
    for name in (job_id, checkpoint_id):
        body = problem(client.post("/v1/score", json={"model": name, "sentences": ["the cat"]}), 409)
        assert reason in body["detail"] and checkpoint_id in body["detail"]
        problem(client.post("/v1/generate", json={"model": name, "prompt": "the"}), 409)
        problem(client.post("/v1/completions", json={"model": name, "prompt": "the", "max_tokens": 1}), 409)
    # the other models still answer
    assert score_first(inference_service, inference_service.job_id)
    # and a repaired file is served
    inference_service.write_checkpoint(key, run.files[0].read_bytes())
    assert score_first(inference_service, checkpoint_id)


# --- the cache on its own ---


def ref_for(path: Path, checkpoint_id: str) -> ModelRef:
    return ModelRef(
        checkpoint_id, "job_x", "succeeded", checkpoint_id, str(path), 1, 1, "epoch", 1.0, datetime.now(UTC)
    )


def test_the_cache_is_bounded_and_drops_the_least_recently_used(
    inference_service: InferenceService, tmp_path: Path
) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"m{i}.pt")
        files[-1].write_bytes(inference_service.run.files[i % 2].read_bytes())
    cache = ModelCache(capacity=2, storage=LocalStorage(tmp_path))
    a, b, c = (ref_for(f, f"ckpt_{i}") for i, f in enumerate(files))
    first = cache.get(a)
    assert cache.get(a) is first  # a hit
    cache.get(b)
    assert cache.loaded(b) is not None  # in memory: `loaded` answers without reading (and counts as a use)
    cache.get(a)  # a is now the most recently used
    cache.get(c)  # evicts b
    assert cache.cached_ids() == ["ckpt_0", "ckpt_2"]
    assert cache.loaded(b) is None  # evicted: `loaded` does not read it again
    assert cache.get(a) is first
    before = files[0].stat()
    os.utime(files[0], ns=(before.st_atime_ns - 10**9, before.st_mtime_ns))
    assert cache.loaded(a) is first  # a use: the file's access time moves (an S3 read cache evicts by it) ...
    after = files[0].stat()
    assert after.st_atime_ns > before.st_atime_ns - 10**9 and after.st_mtime_ns == before.st_mtime_ns  # ... mtime not
    # a rewritten file (new mtime) is read again
    stat = files[0].stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.loaded(a) is None  # the file changed: not the model in memory
    assert cache.get(a) is not first
    assert len(cache) == 2
    files[1].unlink()
    with pytest.raises(Conflict, match="missing"):
        cache.get(b)
    files[2].unlink()
    assert cache.loaded(c) is None  # in memory, but its file is gone


def test_the_inference_routes_are_in_the_openapi_description(inference_service: InferenceService) -> None:
    paths = inference_service.client.get("/openapi.json").json()["paths"]
    for path in ("/v1/models", "/v1/models/{name}", "/v1/models/aliases/{name}", "/v1/score", "/v1/generate"):
        assert path in paths
    assert "post" in paths["/v1/completions"]
