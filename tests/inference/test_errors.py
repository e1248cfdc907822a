"""The bad-input catalogue of the inference API: each request gets its status and a problem+json
body with a clear detail, and the server answers the next good request as before."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import InferenceService, problem

JOB = "<job>"  # replaced by the served job's id

CASES: list[tuple[str, str, Any, int, str]] = [
    # (id, path, JSON body or raw bytes, status, a fragment of the detail)
    ("malformed json", "/v1/score", b'{"model": "x", "sentences": [', 400, "malformed JSON"),
    ("no sentences", "/v1/score", {"model": JOB, "sentences": []}, 422, "sentences"),
    ("sentence not text", "/v1/score", {"model": JOB, "sentences": [3]}, 422, "sentences.0"),
    ("too many sentences", "/v1/score", {"model": JOB, "sentences": ["a"] * 61}, 422, "at most 60"),
    ("sentence too long", "/v1/score", {"model": JOB, "sentences": ["a " * 101]}, 422, "at most 100 per sentence"),
    ("too many tokens", "/v1/score", {"model": JOB, "sentences": ["a " * 100] * 21}, 422, "at most 2000 per request"),
    ("unknown option", "/v1/score", {"model": JOB, "sentences": ["a"], "log2": True}, 422, "log2"),
    ("no model", "/v1/score", {"sentences": ["a"]}, 422, "model"),
    ("unknown model", "/v1/score", {"model": "job_missing", "sentences": ["a"]}, 404, "job_missing"),
    ("NaN temperature", "/v1/generate", b'{"model": "<job>", "prompt": "the", "temperature": NaN}', 422, "temperature"),
    ("inf temperature", "/v1/generate", b'{"model": "<job>", "prompt": "the", "temperature": Infinity}', 422, "temp"),
    ("negative temperature", "/v1/generate", {"model": JOB, "temperature": -0.5}, 422, "temperature"),
    ("top_p 0", "/v1/generate", {"model": JOB, "top_p": 0}, 422, "top_p"),
    ("top_p over 1", "/v1/generate", {"model": JOB, "top_p": 1.5}, 422, "top_p"),
    ("NaN top_p", "/v1/generate", b'{"model": "<job>", "top_p": NaN}', 422, "top_p"),
    ("top_k 0", "/v1/generate", {"model": JOB, "top_k": 0}, 422, "top_k"),
    ("max_tokens over limit", "/v1/generate", {"model": JOB, "max_tokens": 51}, 422, "limit of 50"),
    ("negative max_tokens", "/v1/generate", {"model": JOB, "max_tokens": -1}, 422, "max_tokens"),
    ("n over limit", "/v1/generate", {"model": JOB, "n": 5}, 422, "limit of 4"),
    ("n 0", "/v1/generate", {"model": JOB, "n": 0}, 422, "n"),
    ("empty stop", "/v1/generate", {"model": JOB, "stop": ""}, 422, "stop"),
    ("negative seed", "/v1/generate", {"model": JOB, "seed": -1}, 422, "seed"),
    ("unknown model generate", "/v1/generate", {"model": "nope", "prompt": "the"}, 404, "nope"),
    ("NaN completions", "/v1/completions", b'{"model": "<job>", "prompt": "a", "temperature": NaN}', 422, "temp"),
    ("no prompt", "/v1/completions", {"model": JOB}, 422, "prompt"),
]


@pytest.mark.parametrize(("path", "body", "status", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_requests_get_a_problem_and_the_server_keeps_serving(
    inference_service: InferenceService, path: str, body: Any, status: int, fragment: str
) -> None:
    client, job = inference_service.client, inference_service.job_id
    if isinstance(body, bytes):
        raw = body.replace(b"<job>", job.encode())
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json={k: job if v == JOB else v for k, v in body.items()})
    answer = problem(response, status)
    assert fragment in answer["detail"] and answer["instance"] == path
    good = client.post("/v1/score", json={"model": job, "sentences": ["the cat sat"]})
    assert good.status_code == 200
    generated = client.post("/v1/generate", json={"model": job, "prompt": "the", "max_tokens": 3, "seed": 1})
    assert generated.status_code == 200
