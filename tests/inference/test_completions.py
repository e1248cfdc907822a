"""POST /v1/completions, OpenAI's legacy API: the official `openai` client against uvicorn on a
real port (whole and streamed), echo + logprobs scoring of a prompt (the first token `null`), text
offsets, finish reasons, and the request fields OpenAI-compatible servers accept or refuse."""

from __future__ import annotations

import math
from typing import Any

import httpx
import openai
import pytest

from .conftest import InferenceService, ModelFiles, close, hand_greedy, hand_logprobs, problem
from .test_generation import stream_events


@pytest.fixture
def client_openai(server_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server_url}/v1", api_key="unused", max_retries=0, timeout=30)


def complete(service: InferenceService, **body: Any) -> dict[str, Any]:
    response = service.client.post("/v1/completions", json={"model": service.job_id, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_echo_with_max_tokens_0_scores_the_prompt(inference_service: InferenceService, direct: ModelFiles) -> None:
    prompt = "the cat  sat on\tthe mat"
    result = complete(inference_service, prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    assert result["object"] == "text_completion" and result["id"].startswith("cmpl-")
    choice = result["choices"][0]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    lp = choice["logprobs"]
    words = prompt.split()
    assert lp["tokens"] == words
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # OpenAI's convention
    assert close(lp["token_logprobs"][1:], hand_logprobs(direct, words)[1:], 1e-5)
    assert lp["text_offset"] == [prompt.index(w, o) for w, o in zip(words, [0, 4, 9, 13, 16, 20], strict=True)]
    for token, logprob, top in zip(words[1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True):
        assert 2 <= len(top) <= 3 and top[token] == logprob
    assert result["usage"] == {"prompt_tokens": 6, "completion_tokens": 0, "total_tokens": 6}
    # the same numbers as /v1/score (which also reports the first word, given <eos>)
    scored = inference_service.client.post(
        "/v1/score", json={"model": inference_service.job_id, "sentences": [prompt], "score_eos": False}
    ).json()
    assert close(lp["token_logprobs"][1:], scored["sentences"][0]["logprobs"][1:], 1e-6)


def test_greedy_completion_text_offsets_and_finish_reason(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    chain = hand_greedy(direct, ["the"], 20)
    expected = chain[: chain.index("<eos>")]
    result = complete(inference_service, prompt="the", max_tokens=20, temperature=0, logprobs=1)
    choice = result["choices"][0]
    assert choice["text"] == " " + " ".join(expected)  # continues the prompt: a space first
    assert choice["finish_reason"] == "stop"  # the end of the sentence is a stop in OpenAI's terms
    lp = choice["logprobs"]
    assert lp["tokens"] == expected
    full = "the" + choice["text"]
    assert [full[o : o + len(t)] for o, t in zip(lp["text_offset"], lp["tokens"], strict=True)] == expected
    assert close(lp["token_logprobs"], hand_logprobs(direct, ["the", *expected])[1:], 1e-4)
    for token, top in zip(lp["tokens"], lp["top_logprobs"], strict=True):
        assert max(top, key=lambda w: top[w]) == token  # greedy: the chosen word is the most likely
    # With echo, <eos> is a generated token and the continuation goes on: exactly max_tokens of them.
    echoed = complete(inference_service, prompt="the", max_tokens=20, temperature=0, echo=True)["choices"][0]
    assert echoed["text"] == "the " + " ".join(chain) and echoed["logprobs"] is None
    assert echoed["finish_reason"] == "length"
    assert complete(inference_service, prompt="the", max_tokens=2, temperature=0)["choices"][0]["finish_reason"] == (
        "length"
    )


def test_openai_client_echo_logprobs(client_openai: openai.OpenAI, inference_service: InferenceService) -> None:
    prompt = "a big dog ran fast"
    completion = client_openai.completions.create(
        model=inference_service.job_id, prompt=prompt, max_tokens=0, echo=True, logprobs=1
    )
    choice = completion.choices[0]
    assert choice.text == prompt
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    assert choice.logprobs.tokens == prompt.split()
    assert choice.logprobs.token_logprobs[0] is None
    assert all(isinstance(x, float) and x < 0 for x in choice.logprobs.token_logprobs[1:])
    assert completion.usage is not None and completion.usage.prompt_tokens == 5
    direct = complete(inference_service, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    assert choice.logprobs.token_logprobs == direct["choices"][0]["logprobs"]["token_logprobs"]


def test_openai_client_seeded_completions_and_a_list_of_prompts(
    client_openai: openai.OpenAI, inference_service: InferenceService
) -> None:
    options: dict[str, Any] = {"model": inference_service.job_id, "max_tokens": 12, "seed": 5, "n": 2}
    first = client_openai.completions.create(prompt=["the", "a big"], **options)
    again = client_openai.completions.create(prompt=["the", "a big"], **options)
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert all(c.finish_reason in ("stop", "length") for c in first.choices)
    assert first.usage is not None and first.usage.prompt_tokens == 3


def test_openai_client_streaming_matches_the_whole_response(
    client_openai: openai.OpenAI, inference_service: InferenceService
) -> None:
    options: dict[str, Any] = {
        "model": inference_service.job_id, "prompt": "the red", "max_tokens": 15, "seed": 11, "n": 2, "logprobs": 2
    }  # fmt: skip
    whole = client_openai.completions.create(**options)
    stream = client_openai.completions.create(stream=True, stream_options={"include_usage": True}, **options)
    texts = {0: "", 1: ""}
    tokens: dict[int, list[str]] = {0: [], 1: []}
    finish: dict[int, str | None] = {}
    usage = None
    for chunk in stream:
        assert chunk.object == "text_completion"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.logprobs is not None and c.logprobs.tokens:
                tokens[c.index] += c.logprobs.tokens
            if c.finish_reason is not None:
                finish[c.index] = c.finish_reason
    for c in whole.choices:
        assert texts[c.index] == c.text
        assert c.logprobs is not None and tokens[c.index] == c.logprobs.tokens
        assert finish[c.index] == c.finish_reason
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_ends_with_done_and_echoes_first(inference_service: InferenceService) -> None:
    body = {"model": inference_service.job_id, "prompt": "the", "max_tokens": 3, "temperature": 0, "stream": True,
            "echo": True, "logprobs": 0}  # fmt: skip
    events = stream_events(inference_service.client, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    first = events[0]["choices"][0]
    assert first["text"] == "the" and first["logprobs"]["token_logprobs"] == [None]
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_the_streamed_words_reach_the_client_one_by_one(server_url: str, inference_service: InferenceService) -> None:
    body = {"model": inference_service.job_id, "prompt": "the", "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server_url}/v1/generate", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and len(lines) >= 3


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"presence_penalty": 1.0}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"best_of": 3}, "best_of"),
        ({"suffix": "x"}, "suffix"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, 2, 100000]}, "prompt"),  # a token id outside the vocabulary
        ({"prompt": [[1], [-1]]}, "prompt[1]"),
        ({"prompt": ["the", 2]}, "prompt"),
        ({"logprobs": 21}, "logprobs"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 51}, "max_tokens"),
        ({"n": 5}, "n"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["the", " "]}, "stop"),
    ],
)
def test_unsupported_or_out_of_range_completion_fields(
    inference_service: InferenceService, body: dict[str, Any], fragment: str
) -> None:
    request = {"model": inference_service.job_id, "prompt": "the", **body}
    detail = problem(inference_service.client.post("/v1/completions", json=request), 422)["detail"]
    assert fragment in detail


def test_unknown_openai_fields_are_ignored(inference_service: InferenceService) -> None:
    result = complete(inference_service, prompt="the", max_tokens=1, user="me", some_future_field=True)
    assert len(result["choices"]) == 1 and not math.isnan(result["created"])


def test_normalize_reads_a_text_prompt_in_the_model_convention(inference_service: InferenceService) -> None:
    prompt = "The Cat's 42 mats,"
    result = complete(inference_service, prompt=prompt, max_tokens=0, echo=True, logprobs=0, normalize=True)
    lp = result["choices"][0]["logprobs"]
    assert lp["tokens"] == ["the", "cat", "'s", "N", "mats"]
    assert lp["text_offset"] == [0, 4, 7, 10, 13]  # where each token's text starts ("N" at "42")
    body = {"model": inference_service.job_id, "sentences": [prompt], "score_eos": False, "normalize": True}
    scored = inference_service.client.post("/v1/score", json=body).json()["sentences"][0]
    assert lp["token_logprobs"] == [None, *scored["logprobs"][1:]]
