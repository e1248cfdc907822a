"""Concurrent requests on a real server: scoring and streamed generation at once give the same
numbers as one at a time (the model's lock serialises forwards; streams take turns per token)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from harness import wait_for

from .conftest import InferenceService


def test_concurrent_scoring_and_streams_match_sequential_answers(
    server_url: str, inference_service: InferenceService
) -> None:
    model = inference_service.job_id
    score_bodies = [{"model": model, "sentences": [f"the cat sat on the mat {'red ' * i}"] * 20} for i in range(4)]
    generate_body = {"model": model, "prompt": "the", "max_tokens": 25, "seed": 9, "n": 2}

    def score(body: dict[str, Any]) -> list[list[float]]:
        response = httpx.post(f"{server_url}/v1/score", json=body, timeout=60)
        response.raise_for_status()
        return [s["logprobs"] for s in response.json()["sentences"]]

    def stream(body: dict[str, Any]) -> str:
        with httpx.stream("POST", f"{server_url}/v1/generate", json={**body, "stream": True}, timeout=60) as r:
            return "".join(r.iter_text())

    sequential_scores = [score(b) for b in score_bodies]
    whole = httpx.post(f"{server_url}/v1/generate", json=generate_body, timeout=60).json()
    with ThreadPoolExecutor(6) as pool:
        scores = [pool.submit(score, b) for b in score_bodies]
        streams = [pool.submit(stream, generate_body) for _ in range(2)]
        assert [f.result() for f in scores] == sequential_scores
        for future in streams:
            text = future.result()
            assert text.endswith("data: [DONE]\n\n")
            events = [json.loads(e.removeprefix("data: ")) for e in text.split("\n\n") if e.startswith("data: {")]
            for choice in whole["choices"]:
                words = [c["token"] for e in events for c in e["choices"] if c["index"] == choice["index"]]
                assert words[:-1] == choice["tokens"] and words[-1] is None


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "event-stream"]


def test_many_streams_at_once_and_a_client_that_leaves_early(
    server_url: str, inference_service: InferenceService
) -> None:
    body = {"model": inference_service.job_id, "prompt": "the", "max_tokens": 50, "n": 4, "seed": 5}
    whole = httpx.post(f"{server_url}/v1/generate", json=body, timeout=60).json()

    # A client that reads one event and hangs up: the server goes on serving, and its producer ends.
    with httpx.stream("POST", f"{server_url}/v1/generate", json={**body, "stream": True}, timeout=60) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["choices"]

    def stream(_: int) -> list[list[str | None]]:
        with httpx.stream("POST", f"{server_url}/v1/generate", json={**body, "stream": True}, timeout=60) as r:
            text = "".join(r.iter_text())
        assert text.endswith("data: [DONE]\n\n")
        events = [json.loads(e.removeprefix("data: ")) for e in text.split("\n\n") if e.startswith("data: {")]
        return [[c["token"] for e in events for c in e["choices"] if c["index"] == i] for i in range(4)]

    # More streams than a small thread pool has threads: each has a producer of its own.
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(stream, range(12)))
    expected = [[*choice["tokens"], None] for choice in whole["choices"]]
    assert all(result == expected for result in results)
    wait_for(lambda: not stream_threads(), timeout=10, what="stream producers to end")
