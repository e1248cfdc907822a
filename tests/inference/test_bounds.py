"""Work per request is bounded by the settings, not by what a client sends: prompt length and
count, concurrent generation (a bounded wait for a turn, then 503 with Retry-After) and open event
streams (503 at once), and a long prompt read in chunks gives the numbers a token-by-token reading
gives."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .conftest import LIMITS, InferenceService, ModelFiles, close, hand_greedy, hand_logprobs, problem

WORDS = ("the", "cat", "sat", "on", "mat", "a", "big", "dog", "ran", "fast")


def long_prompt(count: int) -> list[str]:
    return [WORDS[(i * 7 + i // 3) % len(WORDS)] for i in range(count)]


def test_prompts_over_the_word_limit_are_refused_before_any_work(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    prompt = " ".join(long_prompt(50_000))
    generate = client.post("/v1/generate", json={"model": model, "prompt": prompt, "max_tokens": 1})
    assert "50000 words, at most" in problem(generate, 422)["detail"]
    echo = {"model": model, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 5}
    assert "50000 words, at most" in problem(client.post("/v1/completions", json=echo), 422)["detail"]
    many = {"model": model, "prompt": ["the cat"] * 65, "max_tokens": 1}
    assert "65 prompts, at most 64" in problem(client.post("/v1/completions", json=many), 422)["detail"]


def test_a_prompt_longer_than_a_chunk_reads_as_one_token_at_a_time(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    words = long_prompt(LIMITS["max_prompt_words"] - 500)  # > PROMPT_CHUNK: read in two chunks
    body = {"model": inference_service.job_id, "prompt": " ".join(words), "max_tokens": 3, "temperature": 0}
    result = inference_service.client.post("/v1/completions", json={**body, "echo": True, "logprobs": 1}).json()
    logprobs = result["choices"][0]["logprobs"]["token_logprobs"]
    oracle = hand_logprobs(direct, words)
    assert close(logprobs[1 : len(words)], oracle[1:], 1e-4)
    greedy = hand_greedy(direct, words, 3)
    expected = greedy[: greedy.index("<eos>")] if "<eos>" in greedy else greedy  # the end of sentence ends it
    generated = inference_service.client.post("/v1/generate", json=body).json()["choices"][0]
    assert generated["tokens"] == expected
    assert generated["finish_reason"] == ("eos" if len(expected) < 3 else "length")


def test_generation_past_the_concurrency_limit_waits_then_gets_503_with_retry_after(
    inference_service: InferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = inference_service.client
    slots = client.app.state.inference_slots  # type: ignore[attr-defined]
    monkeypatch.setattr(slots, "wait_seconds", 0.5)
    body: dict[str, Any] = {"model": inference_service.job_id, "sentences": ["the cat sat"]}
    generate = {"model": body["model"], "prompt": "the", "max_tokens": 3, "temperature": 0}
    held = [slots.acquire() for _ in range(slots.capacity)]  # as many requests as allowed, computing
    try:
        started = time.monotonic()
        response = client.post("/v1/generate", json={**generate, "stream": True})
        assert time.monotonic() - started >= 0.5  # it waited for a turn before giving up
        assert "busy" in problem(response, 503)["detail"] and response.headers["retry-after"] == "1"
        # scoring waits for the batcher instead (tests/inference/test_batching.py)
        assert client.post("/v1/score", json=body).status_code == 200
        with ThreadPoolExecutor(1) as pool:  # a turn that frees up in time is taken
            waiting = pool.submit(client.post, "/v1/generate", json=generate)
            time.sleep(0.1)
            held.pop().release()
            assert waiting.result(timeout=30).status_code == 200
        held.append(slots.acquire())  # all taken again
        monkeypatch.setattr(slots, "max_waiting", 0)  # no room to wait: refused at once
        assert "none free" in problem(client.post("/v1/generate", json=generate), 503)["detail"]
    finally:
        for slot in held:
            slot.release()
    assert client.post("/v1/generate", json=generate).status_code == 200
    assert slots.taken == 0 and slots.waiting == 0  # every request gave its slot back, streamed ones included


def test_event_streams_past_their_cap_get_503_with_retry_after(inference_service: InferenceService) -> None:
    client = inference_service.client
    slots = client.app.state.event_slots  # type: ignore[attr-defined]
    path = f"/v1/jobs/{inference_service.job_id}/events"
    held = [slots.acquire() for _ in range(slots.capacity)]
    try:
        response = client.get(path)
        assert "event streams" in problem(response, 503)["detail"] and response.headers["retry-after"] == "1"
    finally:
        for slot in held:
            slot.release()
    with client.stream("GET", path) as stream:  # the job has ended: the stream ends too
        assert stream.status_code == 200 and "event: end" in stream.read().decode()
    assert slots.taken == 0
