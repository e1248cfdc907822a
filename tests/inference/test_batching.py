"""Cross-request batching: for `/v1/score` the same floats whatever a sentence is computed with, one
forward pass for concurrent requests, fairness between keys, and a bounded wait instead of a
refusal; for generation, concurrent streams decoding together with a seeded sample's text unchanged.

The batcher is held still by taking its model's lock (what a long forward pass does), so requests
pile up exactly as they would behind one.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.inference import registry
from app.inference.batcher import ScoreBatcher, decode_loop
from app.inference.registry import LoadedModel
from app.main import create_app
from model.checkpoint import load
from model.inference import Continuations, GeneratedToken, score_sentences
from model.network import supported_precisions

from .conftest import WORDS, InferenceService, problem, served


def loaded_model(service: InferenceService) -> LoadedModel:
    app = service.client.app
    with Session(service.engine) as session:
        ref = registry.resolve(session, service.job_id)
    loaded: LoadedModel = app.state.model_cache.get(ref)  # type: ignore[attr-defined]
    return loaded


@pytest.fixture
def batcher(inference_service: InferenceService) -> Iterator[ScoreBatcher]:
    loaded = loaded_model(inference_service)
    found: ScoreBatcher = inference_service.client.app.state.batchers.get(loaded, "fp32")  # type: ignore[attr-defined]
    limits = (found.max_queue_tokens, found.max_queue_seconds)
    yield found
    found.max_queue_tokens, found.max_queue_seconds = limits


def logprobs(client: TestClient, model: str, sentences: list[str], **options: Any) -> list[list[float]]:
    response = client.post("/v1/score", json={"model": model, "sentences": sentences, **options})
    assert response.status_code == 200, response.text
    return [s["logprobs"] for s in response.json()["sentences"]]


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))) for _ in range(count)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_sentence_gets_identical_floats_whatever_it_is_computed_with(
    inference_service: InferenceService, precision: str
) -> None:
    if precision not in supported_precisions(torch.device("cpu")):
        pytest.skip(f"this CPU has no {precision}")
    client, model = inference_service.client, inference_service.job_id
    target = "the cat sat on the mat and the dog ran fast on the big red mat"
    alone = logprobs(client, model, [target], precision=precision)[0]
    others = sentences(49, seed=7)
    for position in (0, 24, 49):  # first, in the middle, last
        batch = [*others[:position], target, *others[position:]]
        assert logprobs(client, model, batch, precision=precision)[position] == alone, position
    assert all(got == alone for got in logprobs(client, model, [target] * 50, precision=precision))
    for count in (2, 3, 5, 31, 33):
        assert all(got == alone for got in logprobs(client, model, [target] * count, precision=precision)), count


def test_concurrent_requests_share_a_forward_pass_and_keep_their_numbers(
    inference_service: InferenceService, batcher: ScoreBatcher
) -> None:
    client, model = inference_service.client, inference_service.job_id
    requests = [sentences(3, seed) for seed in range(12)]
    alone = [logprobs(client, model, request) for request in requests]
    before = batcher.batches
    with ThreadPoolExecutor(len(requests)) as pool:
        with batcher.loaded.lock:  # a forward pass in progress
            futures = [pool.submit(logprobs, client, model, request) for request in requests]
            deadline = time.monotonic() + 30
            total = sum(len(s.split()) + 1 for r in requests for s in r)
            while batcher.queued_tokens + batcher.in_flight_tokens < total:  # the first batch waits for the lock
                assert time.monotonic() < deadline, "the requests never queued"
                time.sleep(0.01)
            assert not any(f.done() for f in futures)  # waiting, not refused
        together = [f.result() for f in futures]
    assert together == alone  # identical floats, batched with other clients' sentences
    # what came before the batcher took its first batch, and all the rest in a second one
    assert batcher.batches - before <= 2


def test_a_flood_from_one_key_does_not_starve_another_keys_sentence(
    inference_service: InferenceService, batcher: ScoreBatcher
) -> None:
    flood = [[s.split() for s in sentences(200, seed)] for seed in range(8)]  # ~3,400 tokens each
    single = ["the", "cat", "sat"]
    finished: list[str] = []
    lock = threading.Lock()

    def note(name: str) -> Any:
        def done(_: Any) -> None:
            with lock:
                finished.append(name)

        return done

    with batcher.loaded.lock:
        for i, request in enumerate(flood):
            batcher.submit("flooder", request, True).add_done_callback(note(f"flood-{i}"))
        lone = batcher.submit("other", [single], True)
        lone.add_done_callback(note("single"))
    got = lone.result(timeout=60)[0]
    expected = score_sentences(batcher.loaded.model, batcher.loaded.vocab, [single])[0]
    assert got.logprobs == expected.logprobs
    deadline = time.monotonic() + 120
    while len(finished) < len(flood) + 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the lone sentence went in the first batch, ahead of requests queued before it
    assert finished.index("single") < finished.index(f"flood-{len(flood) - 1}")
    assert finished.index("single") <= 1


def test_a_full_queue_and_a_long_wait_answer_503_with_retry_after(
    inference_service: InferenceService, batcher: ScoreBatcher
) -> None:
    client, model = inference_service.client, inference_service.job_id
    body = {"model": model, "sentences": ["the cat sat on the mat"] * 10}
    batcher.max_queue_tokens, batcher.max_queue_seconds = 100, 1.0
    with ThreadPoolExecutor(2) as pool, batcher.loaded.lock:  # the lock is let go first
        first = pool.submit(client.post, "/v1/score", json=body)  # taken into a batch that waits
        deadline = time.monotonic() + 30
        while batcher.in_flight_tokens == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        waiting = pool.submit(client.post, "/v1/score", json=body)  # 70 tokens: queued
        while batcher.queued_tokens == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        full = client.post("/v1/score", json=body)  # 70 more: past 100
        assert "waiting to be scored" in problem(full, 503)["detail"] and full.headers["retry-after"]
        for late in (first.result(timeout=30), waiting.result(timeout=30)):  # their second ran out
            assert "waited 1 s" in problem(late, 503)["detail"] and late.headers["retry-after"] == "1"
        assert batcher.queued_tokens == 0  # the queued request's work was withdrawn
    assert client.post("/v1/score", json=body).status_code == 200


def test_a_seeded_sample_is_the_same_text_alone_or_among_15_concurrent_streams(
    inference_service: InferenceService,
) -> None:
    client, model = inference_service.client, inference_service.job_id
    loop = decode_loop(loaded_model(inference_service), "fp32")

    def stream(seed: int, temperature: float = 1.0) -> list[str]:
        body = {"model": model, "prompt": "the cat", "max_tokens": 40, "temperature": temperature, "seed": seed}
        body["stream"] = True
        with client.stream("POST", "/v1/generate", json=body) as response:
            assert response.status_code == 200
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
        return [
            json.loads(e)["choices"][0]["token"] or "" for e in events if e != "[DONE]" and json.loads(e)["choices"]
        ]

    alone = stream(1234)
    greedy_alone = stream(0, temperature=0)
    before = loop.steps
    with ThreadPoolExecutor(16) as pool:
        with loop.loaded.lock:  # the streams start together
            futures = [pool.submit(stream, 1234 if i == 7 else 100 + i) for i in range(15)]
            futures.append(pool.submit(stream, 0, 0.0))
            time.sleep(0.5)
        together = [f.result(timeout=120) for f in futures]
    assert together[7] == alone  # the seeded sample, batched with 15 others
    assert together[15] == greedy_alone  # greedy is unchanged
    steps = loop.steps - before
    assert steps < sum(len(t) for t in together) // 2  # they decoded together, not one after another


def test_a_stream_whose_client_leaves_stops_decoding_and_gives_its_slot_back(
    inference_service: InferenceService,
) -> None:
    # With echo, a completion does not end at <eos>: this one would run 100,000 steps (minutes).
    settings = inference_service.settings.model_copy(update={"max_generate_tokens": 100_000})
    app = create_app(settings)
    body = {"model": inference_service.job_id, "prompt": "the", "max_tokens": 100_000, "echo": True, "stream": True}
    with served(settings, app) as url:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        connection.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data: {")  # the echoed prompt
        for _ in range(2):  # two generated words: the first step was computed
            assert response.readline() == b"\n" and response.readline().startswith(b"data: {")
        with Session(inference_service.engine) as session:
            loaded: LoadedModel = app.state.model_cache.get(registry.resolve(session, inference_service.job_id))
        loop, slots = decode_loop(loaded, "fp32"), app.state.inference_slots
        assert slots.taken == 1 and loop.steps > 0  # decoding
        response.close()
        connection.close()  # the socket closes: the server reads the end of the connection
        deadline = time.monotonic() + 10
        while slots.taken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slots.taken == 0  # the stream ended
        steps = loop.steps
        time.sleep(0.5)  # hundreds of steps, had the generation gone on
        assert loop.steps <= steps + 1  # it left the decode loop (at most the step under way finished)


def test_a_reader_that_lags_gets_the_events_waiting_for_it_at_once(inference_service: InferenceService) -> None:
    loaded = loaded_model(inference_service)
    loop = decode_loop(loaded, "fp32")

    def continuations() -> Continuations:
        with loaded.lock:
            return Continuations(loaded.model, loaded.vocab, ["the"], max_tokens=40, temperature=1.0, seed=7, n=2)

    alone = list(loop.run(continuations()))

    async def lagging() -> list[list[GeneratedToken | tuple[int, str]]]:
        running = continuations()
        batches = loop.event_batches(running)
        first = await anext(batches)
        while not running.done:  # the loop runs on while this reader does not read
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        return [first] + [batch async for batch in batches]

    batches = asyncio.run(lagging())
    assert [event for batch in batches for event in batch] == alone  # the same events, in order
    assert len(batches) <= 3 < len(alone)  # the first step's, then all the others at once


def test_an_unknown_word_for_a_vocabulary_without_unk_is_refused_before_the_batch(
    inference_service: InferenceService,
) -> None:
    payload = load(inference_service.best_file)
    payload["vocab"] = ["<nothing>" if w == "<unk>" else w for w in payload["vocab"]]  # no <unk> at all
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    job_id, _ = inference_service.add_job("succeeded", [(buffer.getvalue(), 1, 10.0)])
    client = inference_service.client
    body = {"model": job_id, "sentences": ["the zebra sat"], "pretokenized": True}
    assert "cannot tokenize" in problem(client.post("/v1/score", json=body), 422)["detail"]
    body["sentences"] = ["the cat sat"]
    assert client.post("/v1/score", json=body).status_code == 200
