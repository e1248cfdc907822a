"""Inference precision through the real app: the `precision` field of score, generate and
completions, the server's `inference_precision` setting, bf16 numbers within the documented bound
of fp32, batch invariance in bf16, and answers that say which precision computed them. Skipped on
CPUs without bf16."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from model.inference import generate, score_sentences
from model.network import supports_precision

from .conftest import WORDS, InferenceService, ModelFiles, close

pytestmark = pytest.mark.skipif(
    not supports_precision(torch.device("cpu"), "bf16"), reason="this CPU has no bf16 support (AVX512-BF16 or AMX)"
)

# The bound docs/inference-api.md gives for a token's log-probability in bf16 against fp32 (natural log).
BF16_LOGPROB_BOUND = 0.25
SENTENCES = ["the cat sat on the mat", "a dog ran", "N", "red red red big cat", "the big dog sat on a mat fast"]


def post(client: TestClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def bf16_server(inference_service: InferenceService) -> Iterator[TestClient]:
    """The same database served by an app whose LSTMLM_INFERENCE_PRECISION is bf16."""
    settings = inference_service.settings.model_copy(update={"inference_precision": "bf16"})
    with TestClient(create_app(settings)) as client:
        yield client


def test_score_in_bf16_is_within_the_documented_bound_of_fp32(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    full = post(client, "/v1/score", {"model": model, "sentences": SENTENCES})
    low = post(client, "/v1/score", {"model": model, "sentences": SENTENCES, "precision": "bf16"})
    assert (full["precision"], low["precision"]) == ("fp32", "bf16")
    diffs = [
        abs(a - b)
        for f, b16 in zip(full["sentences"], low["sentences"], strict=True)
        for a, b in zip(f["logprobs"], b16["logprobs"], strict=True)
    ]
    assert 0 < max(diffs) <= BF16_LOGPROB_BOUND  # bf16 really ran, and stays within the bound
    ppl_full, ppl_low = full["aggregate"]["corpus_perplexity"], low["aggregate"]["corpus_perplexity"]
    assert math.isclose(ppl_low, ppl_full, rel_tol=0.01)


def test_the_server_setting_is_the_default_and_a_request_overrides_it(
    inference_service: InferenceService, bf16_server: TestClient
) -> None:
    model = inference_service.job_id
    body = {"model": model, "sentences": SENTENCES}
    by_setting = post(bf16_server, "/v1/score", body)
    asked = post(inference_service.client, "/v1/score", {**body, "precision": "bf16"})
    assert by_setting["precision"] == "bf16" and by_setting["sentences"] == asked["sentences"]
    back = post(bf16_server, "/v1/score", {**body, "precision": "fp32"})
    assert back["precision"] == "fp32"
    assert back["sentences"] == post(inference_service.client, "/v1/score", body)["sentences"]


def test_bf16_scores_do_not_depend_on_the_neighbours(inference_service: InferenceService, direct: ModelFiles) -> None:
    client, model = inference_service.client, inference_service.job_id
    target = "the big dog sat on a mat"
    alone = post(client, "/v1/score", {"model": model, "sentences": [target], "precision": "bf16"})
    rng = random.Random(1)
    others = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(59)]
    crowd = post(
        client, "/v1/score", {"model": model, "sentences": [*others[:33], target, *others[33:]], "precision": "bf16"}
    )
    assert close(crowd["sentences"][33]["logprobs"], alone["sentences"][0]["logprobs"], 1e-5)
    # directly too, with groups of every size the batching makes
    words = target.split()
    by_itself = score_sentences(direct.model, direct.vocab, [words], precision="bf16")[0].logprobs
    for size in (1, 3, 17, 512):
        rows = [o.split() for o in others[:40]]
        in_group = score_sentences(direct.model, direct.vocab, [*rows, words], batch_size=size, precision="bf16")
        assert close(in_group[-1].logprobs, by_itself, 1e-5)


def test_generation_in_bf16_says_so_and_matches_the_direct_computation(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    client, model = inference_service.client, inference_service.job_id
    body = {"model": model, "prompt": "the cat", "max_tokens": 12, "temperature": 0, "logprobs": True}
    low = post(client, "/v1/generate", {**body, "precision": "bf16"})
    assert low["precision"] == "bf16"
    expected = generate(direct.model, direct.vocab, ["the", "cat"], max_tokens=12, temperature=0, precision="bf16")[0]
    assert low["choices"][0]["tokens"] == expected.tokens
    assert close(low["choices"][0]["logprobs"], expected.logprobs, 1e-5)
    full = post(client, "/v1/generate", body)
    assert full["precision"] == "fp32"
    n = min(len(full["choices"][0]["logprobs"]), len(low["choices"][0]["logprobs"]))
    assert n > 0
    if full["choices"][0]["tokens"][:n] == low["choices"][0]["tokens"][:n]:
        assert close(full["choices"][0]["logprobs"][:n], low["choices"][0]["logprobs"][:n], BF16_LOGPROB_BOUND)
    # streamed chunks carry the precision too
    with client.stream("POST", "/v1/generate", json={**body, "precision": "bf16", "stream": True}) as response:
        text = "".join(response.iter_text())
    assert '"precision":"bf16"' in text


def test_completions_echo_in_bf16_agrees_with_score(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    prompt = "the cat sat on the mat"
    body = {"model": model, "prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2, "precision": "bf16"}
    completion = post(client, "/v1/completions", body)
    assert completion["precision"] == "bf16"
    scored = post(client, "/v1/score", {"model": model, "sentences": [prompt], "precision": "bf16", "score_eos": False})
    lps = completion["choices"][0]["logprobs"]["token_logprobs"]
    assert lps[0] is None and close(lps[1:], scored["sentences"][0]["logprobs"][1:], 1e-4)


def test_an_unknown_precision_is_a_422(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    for url, body in (
        ("/v1/score", {"model": model, "sentences": ["the cat"]}),
        ("/v1/generate", {"model": model, "prompt": "the"}),
        ("/v1/completions", {"model": model, "prompt": "the"}),
    ):
        response = client.post(url, json={**body, "precision": "fp16"})
        assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
