"""POST /v1/generate through the real app: seeded determinism, greedy = argmax, finish reasons,
stop sequences, log-probabilities, usage, and streaming that delivers the same tokens."""

from __future__ import annotations

import json
import math
from typing import Any
from unittest.mock import ANY

from fastapi.testclient import TestClient

from model.tokenizers import Tokenizer

from .conftest import InferenceService, ModelFiles, close, hand_greedy, hand_logprobs


def generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def stream_events(client: TestClient, url: str, body: dict[str, Any]) -> list[Any]:
    """The `data:` payloads of an event stream, `[DONE]` included as a string."""
    with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    payloads = [block.removeprefix("data: ") for block in events]
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]] + ["[DONE]"]


def test_the_same_seed_gives_the_same_text(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    body = {"model": model, "prompt": "the", "max_tokens": 20, "seed": 1234, "n": 3}
    first, again = generate(client, **body), generate(client, **body)
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]
    texts = {generate(client, **{**body, "seed": seed, "n": 1})["choices"][0]["text"] for seed in range(8)}
    assert len(texts) > 1  # sampling does vary between seeds


def test_temperature_zero_is_the_argmax_chain(inference_service: InferenceService, direct: ModelFiles) -> None:
    for prompt in ("the", "a big", "the cat sat on", ""):
        result = generate(inference_service.client, model=inference_service.job_id, prompt=prompt, temperature=0,
                          max_tokens=12, logprobs=True)  # fmt: skip
        choice = result["choices"][0]
        chain = hand_greedy(direct, prompt.split(), 12)
        if "<eos>" in chain:
            expected, reason = chain[: chain.index("<eos>")], "eos"
        else:
            expected, reason = chain, "length"
        assert choice["tokens"] == expected and choice["finish_reason"] == reason
        assert choice["text"] == " ".join(expected)
        # each word's log p is the model's own, as a direct computation of prompt + continuation gives
        full = hand_logprobs(direct, [*prompt.split(), *expected])
        assert close(choice["logprobs"], full[len(prompt.split()) :], 1e-4)
        assert result["usage"] == {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(expected),
            "total_tokens": len(prompt.split()) + len(expected),
        }


def test_finish_reasons_length_and_stop(inference_service: InferenceService, direct: ModelFiles) -> None:
    client, model = inference_service.client, inference_service.job_id
    chain = hand_greedy(direct, ["the"], 30)
    assert len(chain) > 3 and "<eos>" not in chain[:3], f"the tiny model's greedy chain is too short: {chain}"

    def greedy(**options: Any) -> dict[str, Any]:
        choice: dict[str, Any] = generate(client, model=model, prompt="the", temperature=0, **options)["choices"][0]
        return choice

    assert greedy(max_tokens=2)["tokens"] == chain[:2] and greedy(max_tokens=2)["finish_reason"] == "length"
    # a stop word ends the continuation and is not emitted
    stopped = greedy(max_tokens=30, stop=[chain[2]])
    assert stopped["tokens"] == chain[:2] and stopped["finish_reason"] == "stop"
    # a stop string is one word sequence; a partial match is released again
    assert greedy(max_tokens=30, stop=f"{chain[1]} {chain[2]}")["tokens"] == chain[:1]
    partial = greedy(max_tokens=3, stop=[f"{chain[1]} zebra"])
    assert partial["tokens"] == chain[:3] and partial["finish_reason"] == "length"
    assert greedy(max_tokens=0) == {
        "index": 0, "text": "", "tokens": [], "logprobs": None, "top_logprobs": None, "finish_reason": "length"
    }  # fmt: skip


def test_the_model_can_end_the_sentence(inference_service: InferenceService, direct: ModelFiles) -> None:
    """Some prompt's greedy chain reaches <eos> on this model; the API reports `eos` there."""
    prompts = ["the cat sat on the mat", "a big dog ran fast", "the red cat ran", "the cat sat on the"]
    ending = [p for p in prompts if "<eos>" in hand_greedy(direct, p.split(), 10)]
    assert ending, "the tiny model never ends a sentence greedily"
    result = generate(inference_service.client, model=inference_service.job_id, prompt=ending[0], temperature=0)
    assert result["choices"][0]["finish_reason"] == "eos"


def test_top_k_top_p_and_top_logprobs(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    result = generate(client, model=model, prompt="the", max_tokens=10, seed=3, top_k=1, logprobs=True)
    greedy = generate(client, model=model, prompt="the", max_tokens=10, temperature=0)
    assert result["choices"][0]["tokens"] == greedy["choices"][0]["tokens"]  # top_k = 1 is greedy
    tiny_p = generate(client, model=model, prompt="the", max_tokens=10, seed=3, top_p=1e-6)
    assert tiny_p["choices"][0]["tokens"] == greedy["choices"][0]["tokens"]  # so is a tiny nucleus
    result = generate(client, model=model, prompt="the", max_tokens=5, seed=3, logprobs=True, top_logprobs=3)
    choice = result["choices"][0]
    for token, logprob, top in zip(choice["tokens"], choice["logprobs"], choice["top_logprobs"], strict=True):
        assert 3 <= len(top) <= 4 and math.isclose(top[token], logprob, abs_tol=1e-6)
        assert sorted(top.values(), reverse=True)[:3] == sorted(top.values(), reverse=True)[:3]
        assert logprob <= max(top.values())


def test_streaming_delivers_the_same_tokens_as_the_whole_response(inference_service: InferenceService) -> None:
    client, model = inference_service.client, inference_service.job_id
    body = {"model": model, "prompt": "a big", "max_tokens": 15, "seed": 7, "n": 2, "logprobs": True, "top_logprobs": 3}
    whole = generate(client, **body)
    events = stream_events(client, "/v1/generate", {**body, "stream": True})
    chunks = events[:-1]
    for choice in whole["choices"]:
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == choice["index"]]
        words = [c for c in mine if c["token"] is not None]
        assert [c["token"] for c in words] == choice["tokens"]
        assert "".join(c["text"] for c in mine) == choice["text"]
        assert close([c["logprob"] for c in words], choice["logprobs"], 1e-9)
        for streamed, top in zip([c["top_logprobs"] for c in words], choice["top_logprobs"], strict=True):
            assert streamed.keys() == top.keys() and close(list(streamed.values()), list(top.values()), 1e-9)
        assert mine[-1]["finish_reason"] == choice["finish_reason"] and mine[-1]["token"] is None
    assert chunks[-1]["usage"] == whole["usage"] and chunks[-1]["choices"] == []
    assert all(c["object"] == "generation.chunk" and c["id"] == chunks[0]["id"] for c in chunks)


def test_the_prompt_is_read_and_the_text_written_by_the_model_tokenizer(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    body = {"prompt": "The Cat's 42", "max_tokens": 6, "temperature": 0}
    result = generate(inference_service.client, model=inference_service.job_id, **body)
    assert result["prompt_words"] == ["the", "cat", "'s", "N"]  # the tiny corpus is PTB's form: ptb
    choice = result["choices"][0]
    assert choice["tokens"] == hand_greedy(direct, result["prompt_words"], 6)[: len(choice["tokens"])]
    ptb = Tokenizer("ptb")
    assert choice["text"] == ptb.text(choice["tokens"])
    assert ptb.text(["cat", "'s", "N", "mats"]) == "cat's N mats"  # what that does to PTB's tokens
    # `normalize: true` is the default by its earlier name; `pretokenized` reads the words as given
    assert generate(inference_service.client, model=inference_service.job_id, normalize=True, **body) == {
        **result,
        "id": ANY,
        "created": ANY,
    }
    raw = generate(inference_service.client, model=inference_service.job_id, pretokenized=True, **body)
    assert raw["prompt_words"] == ["The", "Cat's", "42"]
