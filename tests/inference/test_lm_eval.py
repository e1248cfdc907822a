"""lm-evaluation-harness against the live server: `local-completions` with its default options,
pointed at a model's own URL, `base_url=$BASE/models/<model>/v1/completions`.

Its default tokenizer backend strips `/v1/completions` from the base URL and so finds
`tokenizer_info`, `tokenize` and `detokenize` under `$BASE/models/<model>/`: no alias `default` is
needed (none is set here), and any key that may read the model will do (here a `write` key that owns
the jobs, not an admin). It finds the end-of-text id by tokenizing `<eos>`, sends token-id prompts
with `echo: true, max_tokens: 1` and drops the last entry; rolling windows start with the
end-of-text token. The numbers it reports must be `/v1/score`'s:

- a word-level model: word perplexity (`score_eos: false`) and every choice's log-likelihood;
- a subword (bpe) model trained a few steps on raw English: word perplexity, byte perplexity and
  bits per byte of raw lines with case and punctuation (lm-eval counts words with `\\s+` and bytes
  in UTF-8, as `/v1/score`'s `num_words` and `num_bytes` do).

The server has API keys on: lm-eval sends `OPENAI_API_KEY` with its completions and `auth_token`
with its tokenizer calls, as the README says. Under a model's URL a request body naming another
model is a 422, a key that may not read the model gets 404, and the unscoped routes still answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.auth import keys
from app.store.tables import Checkpoint, Job
from model.checkpoint import save, trainer_payload
from model.config import preset
from model.data import Corpus
from model.tokenizers import Tokenizer, train_subword
from model.train import Trainer

from .conftest import InferenceService, TrainedRun, problem, served

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
MAX_DOC_PIECES = 60  # below the server's max_sentence_tokens (100): one window covers each document

PERPLEXITY_TASK = """
task: {name}
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


@dataclass(frozen=True)
class SubwordRun:
    """A bpe model trained a few steps on the license texts, and raw lines it was not trained on."""

    file: Path
    valid_ppl: float
    tokenizer: Tokenizer
    held_out: list[str]


@dataclass(frozen=True)
class Keyed:
    """The service with API keys on: its URL, a `write` key owning both models, a key owning neither."""

    url: str
    key: str
    stranger: str
    word_model: str  # the trained word-level run, as a job of `key`
    subword_model: str  # the bpe run, as a job of `key`
    raw_docs: list[str]  # raw English lines the bpe model was not trained on (`raw_docs`)

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=bearer(key or self.key), timeout=60)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def train_subword_run(root: Path) -> SubwordRun:
    """A bpe tokenizer trained on the raw corpus' training lines, the corpus folder written in its
    tokens (with `tokenizer.json`, so `Corpus.load` reads it), a tiny model trained a few (30) steps."""
    raw = harness.write_raw_corpus(root / "raw")
    splits = {
        split: (raw / f"{split}.txt").read_text(encoding="utf-8").splitlines() for split in ("train", "valid", "test")
    }
    tokenizer = train_subword("bpe", splits["train"], vocab_size=500)
    corpus = root / "corpus"
    corpus.mkdir()
    for split, lines in (("train", splits["train"]), ("valid", splits["valid"][:40]), ("test", splits["test"][:40])):
        (corpus / f"{split}.txt").write_text(
            "".join(" ".join(tokenizer.tokens(line)) + "\n" for line in lines), encoding="utf-8"
        )
    tokenizer.save(corpus)
    config = preset(
        "test",
        hidden_size=32,
        num_steps=10,
        batch_size=8,
        max_steps_per_epoch=30,
        max_epoch=1,
        max_max_epoch=1,
        device="cpu",
    )
    trainer = Trainer(config, Corpus.load(corpus))
    assert trainer.corpus.tokenizer == tokenizer
    trainer.fit()
    assert trainer.state.best_valid_ppl is not None
    file = save(trainer_payload(trainer, tokenizer), root / "bpe.pt")
    return SubwordRun(file, trainer.state.best_valid_ppl, tokenizer, splits["test"][40:])


def raw_docs(lines: list[str], tokenizer: Tokenizer, count: int = 8) -> list[str]:
    """Raw lines with capitals and punctuation, short enough for one window, whose word count is the
    same read by lm-eval (`re.split(r"\\s+")`) and by the service (`str.split`), and that lm-eval's
    `doc_to_target` keeps as text (not a number or a `[...]` list)."""
    docs = [
        line
        for line in lines
        if len(tokenizer.tokens(line)) <= MAX_DOC_PIECES
        and len(re.split(r"\s+", line)) == len(line.split())
        and not line.isdigit()
        and not (line.startswith("[") and line.endswith("]"))
        and any(c.isupper() for c in line)
        and any(c in ",.;:()'\"" for c in line)
    ][:count]
    assert len(docs) == count
    return docs


def owned_job(service: InferenceService, owner_id: str, checkpoints: list[tuple[Path, int, float]]) -> str:
    """A succeeded job with these checkpoints, owned (job and checkpoints) by the key `owner_id`."""
    job_id, _ = service.add_job("succeeded", checkpoints)
    with Session(service.engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(owner_id=owner_id))
        session.execute(update(Checkpoint).where(Checkpoint.job_id == job_id).values(owner_id=owner_id))
        session.commit()
    return job_id


@pytest.fixture(scope="module")
def keyed(
    inference_service: InferenceService, trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Keyed]:
    """The same database served with API keys on; both models owned by a `write` key."""
    subword = train_subword_run(tmp_path_factory.mktemp("bpe"))
    engine = inference_service.engine
    owner, secret = keys.create_key(engine, "lm-eval", "write")
    _, stranger = keys.create_key(engine, "someone else", "write")
    epochs = list(zip(trained_run.files, range(1, len(trained_run.files) + 1), trained_run.valid_ppl, strict=True))
    word_model = owned_job(inference_service, owner.id, epochs)
    subword_model = owned_job(inference_service, owner.id, [(subword.file, 1, subword.valid_ppl)])
    with served(inference_service.settings.model_copy(update={"auth": True})) as url:
        yield Keyed(url, secret, stranger, word_model, subword_model, raw_docs(subword.held_out, subword.tokenizer))


def evaluate(
    keyed: Keyed, model: str, tasks: list[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` with `local-completions` on the model's own URL, offline."""
    for name, value in {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(folder / "hf"),
        "HF_DATASETS_CACHE": str(folder / "hf" / "datasets"),
        "OPENAI_API_KEY": keyed.key,
    }.items():
        monkeypatch.setenv(name, value)
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    base_url = f"{keyed.url}/models/{model}/v1/completions"
    results: dict[str, Any] | None = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"model": model, "base_url": base_url, "auth_token": keyed.key},
        tasks=tasks,
        task_manager=TaskManager(include_path=str(folder)),
        log_samples=True,
    )
    assert results is not None
    return results


def write_perplexity_task(folder: Path, name: str, docs: list[str]) -> None:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (folder / f"{name}.yaml").write_text(PERPLEXITY_TASK.format(name=name, path=path))


def write_choice_task(folder: Path) -> None:
    path = folder / "choices.jsonl"
    path.write_text(
        "".join(json.dumps({"context": c, "choices": ch, "label": label}) + "\n" for c, ch, label in CHOICES)
    )
    (folder / "tiny_choice.yaml").write_text(CHOICE_TASK.format(path=path))


def score(keyed: Keyed, model: str, sentences: list[str]) -> list[dict[str, Any]]:
    response = keyed.post("/v1/score", {"model": model, "sentences": sentences, "score_eos": False})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["sentences"]
    return result


def test_lm_eval_on_a_word_level_model_url_gets_the_score_numbers(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = keyed.word_model
    assert httpx.get(f"{keyed.url}/models/{model}/tokenizer_info").status_code == 401  # the keys are really on
    # No alias `default`: the unscoped tokenizer routes have no model to serve a request that names none.
    problem(httpx.get(f"{keyed.url}/tokenizer_info", headers=bearer(keyed.key)), 404)
    write_perplexity_task(tmp_path, "tiny_wordppl", DOCS)
    write_choice_task(tmp_path)
    results = evaluate(keyed, model, ["tiny_wordppl", "tiny_choice"], tmp_path, monkeypatch)

    # Word perplexity: exp(-total log p / words), the end of sentence not scored.
    scored = score(keyed, model, DOCS)
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
        full = score(keyed, model, [f"{context} {choice}" for choice in choices])
        n_context = len(context.split())
        expected = [math.fsum(s["logprobs"][n_context:]) for s in full]
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert math.isclose(g, e, abs_tol=1e-5), (context, got, expected)
        correct += int(max(range(len(expected)), key=lambda i: expected[i]) == label)
    assert math.isclose(results["results"]["tiny_choice"]["acc,none"], correct / len(CHOICES))


def test_lm_eval_on_a_subword_model_url_gets_the_score_numbers(
    keyed: Keyed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = keyed.subword_model
    info = httpx.get(f"{keyed.url}/models/{model}/tokenizer_info", headers=bearer(keyed.key)).json()
    assert info["tokenizer"] == "bpe" and info["tokenizer_class"] == "subword"
    docs = keyed.raw_docs
    write_perplexity_task(tmp_path, "tiny_bpe_ppl", docs)
    evaluated = evaluate(keyed, model, ["tiny_bpe_ppl"], tmp_path, monkeypatch)

    # Each document's log-likelihood is its total over the pieces, the end of sentence not scored.
    scored = score(keyed, model, docs)
    assert all(len(s["tokens"]) > len(d.split()) for s, d in zip(scored, docs, strict=True))  # pieces, not words
    samples = sorted(evaluated["samples"]["tiny_bpe_ppl"], key=lambda s: s["doc_id"])
    got = [sample["resps"][0][0] for sample in samples]
    for g, s in zip(got, scored, strict=True):
        assert math.isclose(g, s["total_logprob"], abs_tol=1e-5), (got, [s["total_logprob"] for s in scored])
    # The corpus numbers, with lm-eval's word and byte counts: /v1/score's num_words and num_bytes.
    results = evaluated["results"]["tiny_bpe_ppl"]
    assert [s["num_words"] for s in scored] == [len(re.split(r"\s+", d)) for d in docs]
    assert [s["num_bytes"] for s in scored] == [len(d.encode("utf-8")) for d in docs]
    total = math.fsum(s["total_logprob"] for s in scored)
    words = sum(s["num_words"] for s in scored)
    num_bytes = sum(s["num_bytes"] for s in scored)
    bits_per_byte = -total / math.log(2) / num_bytes
    expected = {
        "word_perplexity": math.exp(-total / words),
        "byte_perplexity": 2**bits_per_byte,
        "bits_per_byte": bits_per_byte,
    }
    for metric, value in expected.items():
        got = results[f"{metric},none"]
        assert math.isclose(got, value, rel_tol=1e-6), (metric, got, value)


def test_a_model_url_serves_only_its_model(keyed: Keyed) -> None:
    base = f"/models/{keyed.word_model}"
    other = keyed.subword_model  # a model the key may read, but not the URL's
    # A body naming another model: 422, naming it, on the completions and on the tokenizer routes.
    response = keyed.post(f"{base}/v1/completions", {"model": other, "prompt": "the cat", "max_tokens": 1})
    body = problem(response, 422)
    assert other in body["detail"] and keyed.word_model in body["detail"]
    for route, request in (("tokenize", {"prompt": "the cat"}), ("detokenize", {"tokens": [0]})):
        body = problem(keyed.post(f"{base}/{route}", {**request, "model": other}), 422)
        assert other in body["detail"], route
    # Naming the URL's own model is fine.
    named = keyed.post(f"{base}/tokenize", {"prompt": "the cat sat", "model": keyed.word_model})
    assert named.status_code == 200, named.text

    # A key that may not read the model: the 404 of a model that does not exist, on every scoped route.
    response = httpx.get(f"{keyed.url}{base}/tokenizer_info", headers=bearer(keyed.stranger))
    assert keyed.word_model in problem(response, 404)["detail"]
    for route, request in (
        ("tokenize", {"prompt": "the cat"}),
        ("detokenize", {"tokens": [0]}),
        ("v1/completions", {"prompt": "the cat", "max_tokens": 1}),
    ):
        problem(keyed.post(f"{base}/{route}", request, key=keyed.stranger), 404)

    # The unscoped routes remain, the model named in the body: the same ids.
    unscoped = keyed.post("/tokenize", {"prompt": "the cat sat", "model": keyed.word_model})
    assert unscoped.status_code == 200, unscoped.text
    assert unscoped.json()["tokens"] == named.json()["tokens"]
