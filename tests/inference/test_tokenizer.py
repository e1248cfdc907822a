"""The tokenizer endpoints (vLLM's shape) and token-id prompts on /v1/completions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import InferenceService, ModelFiles, problem


@pytest.fixture
def default_alias(inference_service: InferenceService) -> Iterator[str]:
    client = inference_service.client
    assert client.put("/v1/models/aliases/default", json={"target": inference_service.job_id}).status_code == 200
    yield inference_service.job_id
    client.delete("/v1/models/aliases/default")


@pytest.mark.parametrize("prefix", ["", "/v1"])
def test_tokenize_detokenize_and_info_use_the_scoring_split(
    inference_service: InferenceService, direct: ModelFiles, default_alias: str, prefix: str
) -> None:
    client, vocab = inference_service.client, direct.vocab
    info = client.get(f"{prefix}/tokenizer_info").json()
    assert info["eos_token"] == "<eos>" and info["bos_token"] is None and info["unk_token"] == "<unk>"
    assert info["vocab_size"] == len(vocab) and info["model"] == "default"
    named = client.get(f"{prefix}/tokenizer_info", params={"model": inference_service.job_id}).json()
    assert named["checkpoint_id"] == info["checkpoint_id"]

    text = " the zebra\tcat  sat <eos>"
    tokens = client.post(f"{prefix}/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
    assert tokens["tokens"] == [vocab.id_of(w) for w in text.split()]
    assert tokens["token_strs"] == ["the", "<unk>", "cat", "sat", "<eos>"] and tokens["count"] == 5
    assert client.post(f"{prefix}/tokenize", json={"prompt": "<eos>"}).json()["tokens"] == [vocab.eos_id]
    assert client.post(f"{prefix}/tokenize", json={"prompt": "  "}).json()["tokens"] == []
    back = client.post(f"{prefix}/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert back == {"prompt": "the <unk> cat sat <eos>"}
    again = client.post(f"{prefix}/tokenize", json={"prompt": back["prompt"]}).json()["tokens"]
    assert again == tokens["tokens"]  # a round trip through the vocabulary is stable


def test_tokenizer_errors(inference_service: InferenceService, default_alias: str) -> None:
    client = inference_service.client
    detail = problem(client.post("/detokenize", json={"tokens": [0, 10**6]}), 422)["detail"]
    assert "tokens[1]" in detail
    problem(client.post("/detokenize", json={"tokens": [-1]}), 422)
    problem(client.post("/tokenize", json={"prompt": 5}), 422)
    problem(client.post("/tokenize", json={"model": "no-such-model", "prompt": "the"}), 404)
    problem(client.get("/tokenizer_info", params={"model": "job_nope"}), 404)
    words = "the " * (inference_service.settings.max_request_tokens + 1)
    problem(client.post("/tokenize", json={"prompt": words}), 422)


def test_without_a_default_alias_the_tokenizer_needs_a_model(inference_service: InferenceService) -> None:
    detail = problem(inference_service.client.get("/tokenizer_info"), 404)["detail"]
    assert "default" in detail


def completion(inference_service: InferenceService, **body: Any) -> dict[str, Any]:
    response = inference_service.client.post("/v1/completions", json={"model": inference_service.job_id, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def score(inference_service: InferenceService, sentence: str) -> list[float]:
    body = {"model": inference_service.job_id, "sentences": [sentence], "score_eos": False}
    logprobs: list[float] = inference_service.client.post("/v1/score", json=body).json()["sentences"][0]["logprobs"]
    return logprobs


def test_token_id_prompts_with_a_leading_eos_score_every_word(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    vocab = direct.vocab
    sentences = ["the cat sat on the mat", "a big zebra ran"]
    ids = [[vocab.eos_id, *(vocab.id_of(w) for w in s.split())] for s in sentences]
    # What lm-evaluation-harness sends for a log-likelihood request.
    result = completion(inference_service, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0, seed=1234)
    assert [c["index"] for c in result["choices"]] == [0, 1]
    for choice, sentence in zip(result["choices"], sentences, strict=True):
        words = sentence.split()
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(words) + 2  # <eos>, the words, one generated token
        assert lp["tokens"][0] == "<eos>" and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert lp["tokens"][1:-1] == [w if w in vocab else "<unk>" for w in words]
        assert lp["token_logprobs"][1:-1] == score(inference_service, sentence)  # the same numbers, exactly
        for token, logprob, top in zip(lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True):
            assert top[token] == logprob
        assert choice["finish_reason"] == "length"
        assert choice["text"].startswith("<eos> " + " ".join(lp["tokens"][1:-1]))

    # A single list of ids is one prompt; without the leading <eos> the first word's logprob is null.
    plain = completion(inference_service, prompt=ids[0][1:], max_tokens=0, echo=True, logprobs=0)["choices"]
    assert len(plain) == 1
    assert plain[0]["logprobs"]["token_logprobs"] == [None, *score(inference_service, sentences[0])[1:]]
    # The same prompt as text gives the same answer.
    text = completion(inference_service, prompt="<eos> the cat sat on the mat", max_tokens=0, echo=True, logprobs=0)
    assert text["choices"][0]["logprobs"]["token_logprobs"] == [None, *score(inference_service, sentences[0])]


def test_echo_generates_exactly_max_tokens_eos_included(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    vocab = direct.vocab
    # "the cat sat on the mat" is a whole training pattern: the greedy next word is <eos>.
    prompt = [vocab.eos_id, *(vocab.id_of(w) for w in ["the", "cat", "sat", "on", "the", "mat"])]
    for max_tokens in (1, 3):
        choice = completion(
            inference_service, prompt=prompt, max_tokens=max_tokens, echo=True, logprobs=1, temperature=0
        )["choices"][0]
        generated = choice["logprobs"]["tokens"][len(prompt) :]
        assert len(generated) == max_tokens
        assert generated[0] == "<eos>"
    usage = completion(inference_service, prompt=prompt, max_tokens=1, echo=True, temperature=0)["usage"]
    assert usage["completion_tokens"] == 1
