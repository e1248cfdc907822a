"""lm-evaluation-harness against the live server: `local-completions` with its default options.

Its default tokenizer backend finds `/tokenizer_info`, `/tokenize` and `/detokenize` at the server
root, sends token-id prompts with `echo: true, max_tokens: 1` and drops the last entry; rolling
windows start with the end-of-text token. The numbers it reports must be `/v1/score`'s. The server
has API keys on: lm-eval sends `OPENAI_API_KEY` with its completions and `auth_token` with its
tokenizer calls, as the README says.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth import keys

from .conftest import InferenceService, served

# Raw lines as a user brings them: known words, an unknown one ("zebra"), repeated spaces.
DOCS = [
    "the cat sat on the mat",
    "a big dog ran fast",
    "the red cat ran on the mat",
    "the zebra sat  on a big mat",
    "N dog sat",
]
CHOICES = [
    ("the cat sat on the", ["mat", "dog"], 0),
    ("a big dog ran", ["fast", "the"], 0),
    ("the red", ["cat ran", "mat sat on"], 0),
    ("the", ["zebra ran", "cat sat"], 1),
]

PERPLEXITY_TASK = """
task: tiny_wordppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""

CHOICE_TASK = """
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture
def default_alias(inference_service: InferenceService) -> Iterator[None]:
    """lm-eval's tokenizer calls name no model: they use the alias `default`."""
    client = inference_service.client
    assert client.put("/v1/models/aliases/default", json={"target": inference_service.job_id}).status_code == 200
    yield
    client.delete("/v1/models/aliases/default")


def write_tasks(folder: Path) -> None:
    docs = folder / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    choices = folder / "choices.jsonl"
    choices.write_text(
        "".join(json.dumps({"context": c, "choices": ch, "label": label}) + "\n" for c, ch, label in CHOICES)
    )
    (folder / "tiny_wordppl.yaml").write_text(PERPLEXITY_TASK.format(path=docs))
    (folder / "tiny_choice.yaml").write_text(CHOICE_TASK.format(path=choices))


@pytest.fixture
def keyed(inference_service: InferenceService) -> Iterator[tuple[str, str]]:
    """The same database served with API keys on, and an admin key: (URL, key)."""
    _, secret = keys.create_key(inference_service.engine, "lm-eval", "admin")
    with served(inference_service.settings.model_copy(update={"auth": True})) as url:
        yield url, secret


def score(server_url: str, key: str, model: str, sentences: list[str]) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server_url}/v1/score",
        json={"model": model, "sentences": sentences, "score_eos": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["sentences"]
    return result


def test_lm_eval_local_completions_gets_the_score_numbers(
    inference_service: InferenceService,
    keyed: tuple[str, str],
    default_alias: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server_url, key = keyed
    assert httpx.get(f"{server_url}/tokenizer_info").status_code == 401  # the keys are really on
    for name, value in {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "OPENAI_API_KEY": key,
    }.items():
        monkeypatch.setenv(name, value)
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    write_tasks(tmp_path)
    model = inference_service.job_id
    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"model": model, "base_url": f"{server_url}/v1/completions", "auth_token": key},
        tasks=["tiny_wordppl", "tiny_choice"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
    )
    assert results is not None

    # Word perplexity: exp(-total log p / words), the end of sentence not scored.
    scored = score(server_url, key, model, DOCS)
    total = math.fsum(s["total_logprob"] for s in scored)
    words = sum(len(d.split()) for d in DOCS)
    expected_ppl = math.exp(-total / words)
    got_ppl = results["results"]["tiny_wordppl"]["word_perplexity,none"]
    assert math.isclose(got_ppl, expected_ppl, rel_tol=1e-6), (got_ppl, expected_ppl)

    # Each choice: log p(continuation | context), the context from the start of the sentence.
    samples = sorted(results["samples"]["tiny_choice"], key=lambda s: s["doc_id"])
    assert len(samples) == len(CHOICES)
    correct = 0
    for sample, (context, choices, label) in zip(samples, CHOICES, strict=True):
        got = [resp[0][0] for resp in sample["resps"]]
        full = score(server_url, key, model, [f"{context} {choice}" for choice in choices])
        n_context = len(context.split())
        expected = [math.fsum(s["logprobs"][n_context:]) for s in full]
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert math.isclose(g, e, abs_tol=1e-5), (context, got, expected)
        correct += int(max(range(len(expected)), key=lambda i: expected[i]) == label)
    assert math.isclose(results["results"]["tiny_choice"]["acc,none"], correct / len(CHOICES))
