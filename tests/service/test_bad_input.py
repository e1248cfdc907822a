"""The bad-input catalogue: each request gets its status and a problem+json body, and nothing
stored (rows or files) changes."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import TINY, Service, open_service, stored_state, write_corpus

Request = Callable[[Service, dict[str, Any]], httpx.Response]


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Service]:
    """A service with a 20 kB upload limit, a 1M-parameter model limit, a 0.1 s step limit and a corpus root."""
    root = write_corpus(tmp_path / "roots" / "tiny")
    svc, close = open_service(
        tmp_path,
        max_upload_bytes=20_000,
        max_model_parameters=1_000_000,
        max_step_seconds=0.1,
        corpus_roots={"tiny": root},
    )
    yield svc
    close()


@pytest.fixture
def ids(limited: Service, tiny_corpus: Path) -> dict[str, Any]:
    """A dataset and a queued job that the bad requests refer to."""
    dataset = limited.upload(tiny_corpus)
    job = limited.submit(dataset["id"])
    return {"dataset": dataset["id"], "job": job["id"]}


def job_body(ids: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"dataset_id": ids["dataset"], "preset": "test", "overrides": {**TINY, **overrides}}


def upload(train: bytes, valid: bytes = b"a b\n", test: bytes = b"a b\n") -> Request:
    files = {"train": ("t.txt", train), "valid": ("v.txt", valid), "test": ("s.txt", test)}
    return lambda s, ids: s.client.post("/v1/datasets", files=files)


def post_job(**body_changes: Any) -> Request:
    return lambda s, ids: s.client.post("/v1/jobs", json={**job_body(ids), **body_changes})


def post_overrides(**overrides: Any) -> Request:
    return lambda s, ids: s.client.post("/v1/jobs", json=job_body(ids, **overrides))


def raw(path: str, body: bytes) -> Request:
    """A JSON body sent as bytes (httpx cannot encode a lone surrogate itself)."""
    return lambda s, ids: s.client.post(path, content=body, headers={"content-type": "application/json"})


def builtin(path: str) -> Request:
    return lambda s, ids: s.client.post("/v1/datasets/builtin", json={"root": "tiny", "path": path})


def post_job_with_key(key: str) -> Request:
    return lambda s, ids: s.client.post("/v1/jobs", json=job_body(ids), headers={"Idempotency-Key": key})


def cursor_of(raw_bytes: bytes) -> str:
    return base64.urlsafe_b64encode(raw_bytes).decode().rstrip("=")


def cursor(t: str, row_id: str) -> str:
    return cursor_of(json.dumps({"t": t, "id": row_id}).encode())


CATALOGUE: dict[str, tuple[Request, int, str]] = {
    # name: (request, status, a phrase the detail must contain)
    "malformed JSON": (
        lambda s, ids: s.client.post(
            "/v1/jobs", content=b'{"dataset_id": "x", ', headers={"content-type": "application/json"}
        ),
        400,
        "malformed JSON",
    ),
    "JSON that is not an object": (lambda s, ids: s.client.post("/v1/jobs", json=[1, 2]), 422, "body"),
    "missing dataset_id": (lambda s, ids: s.client.post("/v1/jobs", json={"preset": "test"}), 422, "dataset_id"),
    "unknown body field": (post_job(epochs=3), 422, "epochs"),
    "unknown preset": (post_job(preset="huge"), 422, "unknown preset 'huge'"),
    "unknown config field": (post_overrides(dropout=0.5), 422, "unknown config field(s): dropout"),
    "negative hidden_size": (post_overrides(hidden_size=-5), 422, "hidden_size must be an integer in [1,"),
    "zero batch_size": (post_overrides(batch_size=0), 422, "batch_size must be an integer in [1,"),
    "keep_prob above 1": (post_overrides(keep_prob=1.5), 422, "keep_prob must be in (0, 1]"),
    "string for an integer": (post_overrides(num_steps="20"), 422, "num_steps must be an integer"),
    "float for an integer": (post_overrides(num_layers=2.5), 422, "num_layers must be an integer"),
    "NaN-like learning rate": (post_overrides(learning_rate=-1), 422, "learning_rate must be a number in (0"),
    "unknown device": (post_overrides(device="tpu"), 422, "device must be one of"),
    "absurd hidden_size (parameters)": (post_overrides(hidden_size=8000), 422, "parameters"),
    "absurd batch x steps (memory)": (
        post_overrides(batch_size=4096, num_steps=1000, hidden_size=200),
        422,
        "GiB of memory",
    ),
    "integer beyond 64 bits": (post_overrides(seed=10**30), 422, "seed must be at most"),
    "corpus too small for the batch": (post_overrides(batch_size=1000, num_steps=10), 422, "too few"),
    "unknown dataset": (post_job(dataset_id="ds_missing"), 422, "dataset 'ds_missing' not found"),
    "non-UTF-8 upload": (upload(b"caf\xe9 au lait\n"), 422, "not UTF-8"),
    "empty upload": (upload(b""), 422, "no words"),
    "whitespace-only upload": (upload(b" \n\t\n"), 422, "no words"),
    "empty test split": (upload(b"a b c\n", test=b""), 422, "test: no words"),
    "missing split in upload": (
        lambda s, ids: s.client.post("/v1/datasets", files={"train": ("t.txt", b"a b\n")}),
        422,
        "valid",
    ),
    "upload over the limit": (upload(b"word " * 5_000), 413, "at most 20,000"),
    "upload far over the limit (refused before parsing)": (upload(b"word " * 40_000), 413, "at most"),
    "chunked upload over the limit (no Content-Length)": (
        lambda s, ids: s.client.post(
            "/v1/datasets",
            content=(b"x" * 10_000 for _ in range(20)),
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        413,
        "has more bytes",
    ),
    "unknown job id": (lambda s, ids: s.client.get("/v1/jobs/job_missing"), 404, "job 'job_missing' not found"),
    "cancel an unknown job": (lambda s, ids: s.client.post("/v1/jobs/job_missing/cancel"), 404, "not found"),
    "delete an unknown job": (lambda s, ids: s.client.delete("/v1/jobs/job_missing"), 404, "not found"),
    "metrics of an unknown job": (lambda s, ids: s.client.get("/v1/jobs/job_missing/metrics"), 404, "not found"),
    "events of an unknown job": (lambda s, ids: s.client.get("/v1/jobs/job_missing/events"), 404, "not found"),
    "checkpoints of an unknown job": (
        lambda s, ids: s.client.get("/v1/jobs/job_missing/checkpoints"),
        404,
        "not found",
    ),
    "unknown checkpoint": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/checkpoints/ckpt_missing/file"),
        404,
        "not found",
    ),
    "unknown dataset id": (lambda s, ids: s.client.get("/v1/datasets/ds_missing"), 404, "not found"),
    "delete a queued job": (lambda s, ids: s.client.delete(f"/v1/jobs/{ids['job']}"), 409, "is queued"),
    "bad cursor": (lambda s, ids: s.client.get("/v1/jobs", params={"cursor": "garbage!"}), 422, "cursor"),
    "unknown status filter": (lambda s, ids: s.client.get("/v1/jobs", params={"status": "done"}), 422, "status"),
    "bad page token": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/metrics", params={"page_token": "x"}),
        422,
        "page_token",
    ),
    "limit out of range": (lambda s, ids: s.client.get("/v1/jobs", params={"limit": 0}), 422, "limit"),
    "max_points of 1": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/metrics", params={"max_points": 1}),
        422,
        "max_points",
    ),
    "unknown route": (lambda s, ids: s.client.get("/v1/nothing"), 404, "Not Found"),
    "wrong method": (lambda s, ids: s.client.put("/v1/jobs"), 405, "Method Not Allowed"),
    # Configs that validation used to accept and that hung or wasted a worker.
    "100,000 layers": (post_overrides(num_layers=100_000), 422, "num_layers must be an integer in [1, 16]"),
    "a decay that overflows": (post_overrides(lr_decay=1e308), 422, "lr_decay must be a number in (0"),
    "a learning rate that diverges": (post_overrides(learning_rate=1e30), 422, "learning_rate must be a number"),
    "a step too slow to cancel": (
        post_overrides(num_layers=16, num_steps=500),
        422,
        "one training step would take about",
    ),
    # Inputs that used to get a 500.
    "NUL byte in a corpus path": (builtin("a\x00b"), 422, "path"),
    "5,000-character corpus path": (builtin("a" * 5000), 422, "path"),
    # A model name no job, checkpoint or alias can have (PostgreSQL refuses NUL bytes in text).
    "NUL byte in a model name": (
        lambda s, ids: s.client.post("/v1/score", json={"model": "a\x00b", "sentences": ["the cat"]}),
        404,
        "not found",
    ),
    "lone surrogate in a corpus path": (
        raw("/v1/datasets/builtin", b'{"root": "tiny", "path": "\\ud800"}'),
        422,
        "Unicode",
    ),
    "lone surrogate in dataset_id": (
        raw("/v1/jobs", b'{"dataset_id": "\\ud800", "preset": "test"}'),
        422,
        "Unicode",
    ),
    "lone surrogate in a scored sentence": (
        raw("/v1/score", b'{"model": "m", "sentences": ["the \\ud800 cat"]}'),
        422,
        "Unicode",
    ),
    "lone surrogate in a completion prompt": (
        raw("/v1/completions", b'{"model": "m", "prompt": ["ok", "\\udfff"]}'),
        422,
        "Unicode",
    ),
    "page token past 64 bits": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/metrics", params={"page_token": "9" * 23}),
        422,
        "page_token",
    ),
    "page token of a superscript digit": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/metrics?page_token=%C2%B2"),
        422,
        "page_token",
    ),
    "cursor at the end of the calendar": (
        lambda s, ids: s.client.get("/v1/jobs", params={"cursor": cursor("0001-01-01T00:00:00+14:00", "a")}),
        422,
        "cursor",
    ),
    "cursor nested past recursion": (
        lambda s, ids: s.client.get("/v1/jobs", params={"cursor": cursor_of(b"[" * 5000)}),
        422,
        "cursor",
    ),
    "Last-Event-ID of a superscript digit": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/events", headers={"Last-Event-ID": b"\xb2"}),
        422,
        "Last-Event-ID",
    ),
    "Last-Event-ID of 5,000 digits": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/events", headers={"Last-Event-ID": "7" * 5000}),
        422,
        "Last-Event-ID",
    ),
    "empty Idempotency-Key": (post_job_with_key(""), 422, "idempotency-key"),
    "Idempotency-Key with a space": (post_job_with_key("a b"), 422, "idempotency-key"),
    "201-character Idempotency-Key": (post_job_with_key("k" * 201), 422, "idempotency-key"),
    "10 MB field (refused before parsing)": (
        lambda s, ids: s.client.post("/v1/jobs", json={"dataset_id": "x" * 10_000_000}),
        413,
        "at most 2,097,152",
    ),
    "8 MB scoring body (refused before parsing)": (
        lambda s, ids: s.client.post("/v1/score", json={"model": "m", "sentences": ["the cat sat"] * 700_000}),
        413,
        "at most 2,097,152",
    ),
    "chunked 3 MB JSON body (no Content-Length)": (
        lambda s, ids: s.client.post(
            "/v1/score", content=(b" " * 100_000 for _ in range(30)), headers={"content-type": "application/json"}
        ),
        413,
        "has more bytes",
    ),
    "1 MB field under the body limit": (
        lambda s, ids: s.client.post("/v1/jobs", json={"dataset_id": ids["dataset"], "preset": "p" * 1_000_000}),
        422,
        "preset",
    ),
    "unknown corpus root": (
        lambda s, ids: s.client.post("/v1/datasets/builtin", json={"root": "ptb"}),
        404,
        "no corpus root named 'ptb'",
    ),
    "tag with a space": (post_job(tags=["ok", "a b"]), 422, 'tags.1 must match ^[A-Za-z0-9_.:-]{1,50}$, got "a b"'),
    "negative limit": (
        lambda s, ids: s.client.get("/v1/jobs", params={"limit": -1}),
        422,
        "limit must be >= 1, got -1",
    ),
    "edit with an unknown field": (
        lambda s, ids: s.client.patch(f"/v1/jobs/{ids['job']}", json={"colour": "red"}),
        422,
        "colour is not a field of this request",
    ),
    "notes past 10,000 characters": (
        lambda s, ids: s.client.patch(f"/v1/jobs/{ids['job']}", json={"notes": "n" * 10_001}),
        422,
        "notes must be at most 10,000 characters, got 10,001",
    ),
    "cursor of another sort": (
        lambda s, ids: s.client.get(
            "/v1/jobs", params={"sort": "test_ppl", "cursor": cursor("2026-01-01T00:00:00+00:00", "job_x")}
        ),
        422,
        "made for sort=-created_at, not sort=test_ppl",
    ),
    "unknown metric key": (
        lambda s, ids: s.client.get(f"/v1/jobs/{ids['job']}/metrics", params={"key": "nonsense"}),
        422,
        "unknown metric key 'nonsense'; the keys are train_ppl",
    ),
    "estimate on an unknown dataset": (
        lambda s, ids: s.client.post("/v1/jobs/estimate", json={"dataset_id": "ds_missing"}),
        422,
        "dataset 'ds_missing' not found",
    ),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_bad_request_gets_a_problem_and_changes_nothing(case: str, limited: Service, ids: dict[str, Any]) -> None:
    send, status, phrase = CATALOGUE[case]
    before = stored_state(limited)
    response = send(limited, ids)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["instance"].startswith("/")
    assert phrase.lower() in body["detail"].lower(), body
    assert len(body["detail"]) <= 300 and len(response.content) < 20_000  # never grows with the input
    assert "/tmp" not in response.text and str(limited.tmp) not in response.text  # no server path
    assert stored_state(limited) == before
