"""Raw text in, honest numbers out, through the real service: tokenizers applied at upload and
registration, an open-vocabulary model trained and served on raw English, the word-level rules
counted independently, and the per-word and per-byte numbers consistent on every answer."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import Service, open_service, stored_state, wait_for, write_corpus, write_raw_corpus

from app.store.storage import join, open_storage
from app.training.datasets import dataset_key
from app.training.sweep import sweep_datasets
from model.data import EOS, UNK, read_tokens
from model.tokenizers import Tokenizer

SPLITS = ("train", "valid", "test")


def lines_of(folder: Path, split: str) -> list[str]:
    return (folder / f"{split}.txt").read_text(encoding="utf-8").splitlines()


def assert_consistent(numbers: dict[str, Any], total_ln: float) -> None:
    """Per token, per word and per byte: the same total log-probability over different counts."""
    assert math.isclose(numbers["word_perplexity"], math.exp(-total_ln / numbers["num_words"]), rel_tol=1e-9)
    assert math.isclose(numbers["bits_per_byte"], -total_ln / math.log(2) / numbers["num_bytes"], rel_tol=1e-9)


@pytest.fixture(scope="module")
def subword_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Raw English (Debian's license texts) uploaded with a bpe tokenizer, a small-preset job trained
    on it by a real worker: (service, dataset, job, corpus folder)."""
    tmp = tmp_path_factory.mktemp("subword")
    corpus = write_raw_corpus(tmp / "raw")
    service, close = open_service(tmp)
    dataset = service.upload(corpus, tokenizer="bpe", tokenizer_vocab_size=2000)
    overrides = {"max_max_epoch": 1, "max_steps_per_epoch": 30, "device": "cpu", "hidden_size": 64}
    response = service.client.post(
        "/v1/jobs", json={"dataset_id": dataset["id"], "preset": "small", "overrides": overrides}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    worker = service.start_worker("--burst")
    assert worker.wait(300) == 0, worker.log()
    done = service.wait_status(job["id"], ("succeeded",))
    yield service, dataset, done, corpus
    close()


def test_raw_english_with_bpe_has_no_unknown_token_and_trains(subword_service: Any) -> None:
    _, dataset, job, corpus = subword_service
    tokenizer = dataset["tokenizer"]
    assert tokenizer["kind"] == "bpe" and tokenizer["lowercase"] is False and tokenizer["min_count"] is None
    assert 300 < tokenizer["vocab_size"] <= 2000
    assert dataset["vocab_size"] == tokenizer["vocab_size"] + 1  # every piece and <eos>
    for split in SPLITS:
        numbers, lines = dataset["splits"][split], lines_of(corpus, split)
        assert numbers["unk"] == 0 and numbers["unk_rate"] == 0  # open vocabulary: nothing unknown
        assert numbers["lines"] == len(lines)
        assert numbers["words"] == sum(len(line.split()) for line in lines)
        assert numbers["bytes"] == sum(len(line.encode()) for line in lines)
        assert numbers["tokens"] > numbers["words"]  # subword pieces: more tokens than words
    assert job["vocabulary"]["size"] == dataset["vocab_size"] and job["vocabulary"]["test_unk"] == 0
    evaluation = job["evaluation"]
    assert evaluation["tokenizer"] == "bpe"
    for split in ("valid", "test"):
        numbers = evaluation[split]
        total_ln = -math.log(numbers["perplexity"]) * numbers["num_tokens"]
        assert numbers["num_words"] == dataset["splits"][split]["words"]
        assert_consistent(numbers, total_ln)
        assert numbers["word_perplexity"] > numbers["perplexity"]  # more tokens than words
    assert job["estimate"]["steps_per_epoch"] == 30


def test_scores_of_raw_text_are_consistent_and_generation_reads_as_text(subword_service: Any) -> None:
    service, _, job, corpus = subword_service
    lines = [*lines_of(corpus, "test")[:40], "Ünïcödé, 漢字 and an emoji 🙂 never seen in training."]
    response = service.client.post("/v1/score", json={"model": job["id"], "sentences": lines})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tokenizer"] == "bpe" and body["warnings"] == []
    for line, sentence in zip(lines, body["sentences"], strict=True):
        assert sentence["num_unk"] == 0 and sentence["unk_rate"] == 0
        assert sentence["num_words"] == len(line.split()) and sentence["num_bytes"] == len(line.encode())
        assert_consistent(sentence, sentence["total_logprob"])
        assert math.isclose(
            sentence["perplexity"], math.exp(-sentence["total_logprob"] / sentence["num_tokens"]), rel_tol=1e-9
        )
    aggregate = body["aggregate"]
    assert aggregate["unk_rate"] == 0 and aggregate["num_words"] == sum(len(line.split()) for line in lines)
    assert_consistent(aggregate, aggregate["total_logprob"])

    generated = service.client.post(
        "/v1/generate", json={"model": job["id"], "prompt": "This License", "max_tokens": 25, "temperature": 0}
    ).json()
    assert "".join(generated["prompt_words"]) == "▁This▁License"  # pieces, whatever the merges
    choice = generated["choices"][0]
    assert "▁" not in choice["text"] and not re.search(r"<0x[0-9A-F]{2}>", choice["text"])
    tokens = open_storage(service.settings).local_tree(join(dataset_key(job["dataset_id"]), "tokens"))
    tokenizer = Tokenizer.load(tokens)
    assert tokenizer is not None and choice["text"] == tokenizer.text(choice["tokens"])


def test_a_scoring_job_of_raw_text_has_the_same_numbers(subword_service: Any) -> None:
    service, dataset, job, corpus = subword_service
    form = {"model": job["id"], "dataset_id": dataset["id"], "split": "valid"}
    response = service.client.post("/v1/scorings", data=form)
    assert response.status_code == 201, response.text
    scoring = response.json()
    assert scoring["options"]["pretokenized"] is False
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    done = wait_for(
        lambda: (s := service.client.get(f"/v1/scorings/{scoring['id']}").json())["status"] == "succeeded" and s,
        60,
    )
    lines = lines_of(corpus, "valid")
    direct = service.client.post("/v1/score", json={"model": job["id"], "sentences": lines}).json()["aggregate"]
    for key in ("num_tokens", "num_words", "num_bytes", "num_unk", "unk_rate"):
        assert done["aggregate"][key] == direct[key], key
    for key in ("total_logprob", "word_perplexity", "bits_per_byte", "corpus_perplexity"):
        assert math.isclose(done["aggregate"][key], direct[key], rel_tol=1e-9), key
    results = service.client.get(f"/v1/scorings/{scoring['id']}/results").text.splitlines()
    first = json.loads(results[0])
    assert first["num_words"] == len(lines[0].split()) and first["unk_rate"] == 0
    assert_consistent(first, first["total_logprob"])


def test_wikitext_with_min_count_matches_a_count_made_here(service: Service, tmp_path: Path) -> None:
    corpus = write_raw_corpus(tmp_path / "raw")
    dataset = service.upload(corpus, tokenizer="wikitext", min_count=2)
    assert dataset["tokenizer"] == {"kind": "wikitext", "lowercase": False, "min_count": 2, "vocab_size": None}
    cut = Tokenizer("wikitext")
    tokens = {split: [cut.tokens(line) for line in lines_of(corpus, split)] for split in SPLITS}
    counts = Counter(t for line in tokens["train"] for t in line)
    vocabulary = {t for t, n in counts.items() if n >= 2} | {EOS, UNK}
    assert dataset["vocab_size"] == len(vocabulary)
    for split in SPLITS:
        numbers = dataset["splits"][split]
        unk = sum(1 for line in tokens[split] for t in line if t == UNK or t not in vocabulary)
        assert numbers["tokens"] == sum(len(line) + 1 for line in tokens[split])
        assert numbers["unk"] == unk and numbers["unk_rate"] == unk / numbers["tokens"]
    assert dataset["splits"]["train"]["unk"] == sum(n for n in counts.values() if n < 2)
    # a job's estimate counts the vocabulary it will train with: the rarer words' rows are gone
    every_word = service.upload(corpus, tokenizer="wikitext")
    assert every_word["vocab_size"] == len(counts) + 2  # every type, <eos> and <unk>
    estimates = [service.submit(d["id"])["estimate"]["step_seconds"] for d in (dataset, every_word)]
    assert estimates[0] < estimates[1]
    # the job's vocabulary is the same rule: what it reports after reading the corpus
    job = service.submit(dataset["id"], max_max_epoch=1, max_steps_per_epoch=2)
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    done = service.wait_status(job["id"], ("succeeded",))
    assert done["vocabulary"]["size"] == len(vocabulary)
    assert done["vocabulary"]["valid_unk"] == dataset["splits"]["valid"]["unk"]


def test_byte_order_marks_and_every_line_end(service: Service, tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "corpus")
    (folder / "train.txt").write_bytes(
        "\ufeffthe cat sat\r\nthe dog ran\rthe mat\n".encode() + (folder / "train.txt").read_bytes()
    )
    (folder / "valid.txt").write_bytes(b"\xef\xbb\xbf" + (folder / "valid.txt").read_bytes().replace(b"\n", b"\r"))
    dataset = service.upload(folder, tokenizer="whitespace")
    train = (folder / "train.txt").read_text(encoding="utf-8")
    assert dataset["splits"]["train"]["lines"] == len(re.split(r"\r\n|\r|\n", train)) - 1
    assert dataset["splits"]["valid"]["lines"] == (folder / "valid.txt").read_bytes().count(b"\r")
    tokens = open_storage(service.settings).local_tree(join(dataset_key(dataset["id"]), "tokens"))
    assert read_tokens(tokens / "train.txt")[:7] == ["the", "cat", "sat", EOS, "the", "dog", "ran"]
    assert dataset["splits"]["valid"]["unk"] == 0  # the mark did not stick to a word


def test_registering_a_folder_again_with_another_tokenizer_makes_a_new_dataset(tmp_path: Path) -> None:
    root = tmp_path / "corpora"
    write_corpus(root / "small")
    service, close = open_service(tmp_path, corpus_roots={"corpora": root})
    try:

        def register(**body: Any) -> tuple[int, dict[str, Any]]:
            response = service.client.post("/v1/datasets/builtin", json={"root": "corpora", "path": "small", **body})
            return response.status_code, response.json()

        status, detected = register()
        assert status == 201 and detected["tokenizer"]["kind"] == "ptb"  # the tiny corpus is PTB's form
        assert register(tokenizer="ptb") == (200, detected)
        assert register(convention="ptb") == (200, detected)  # the earlier name
        assert register() == (200, detected)  # none named: the folder's first dataset
        status, lower = register(tokenizer="whitespace", lowercase=True)
        assert status == 201 and lower["id"] != detected["id"] and lower["tokenizer"]["lowercase"] is True
        assert register(tokenizer="whitespace", lowercase=True) == (200, lower)
        before = stored_state(service)
        assert register(tokenizer="bpe", min_count=2)[0] == 422
        assert stored_state(service) == before
        # deleting the second one removes its tokens, never the server's folder
        storage = open_storage(service.settings)
        assert storage.list(dataset_key(lower["id"]))
        assert service.client.delete(f"/v1/datasets/{lower['id']}").status_code == 204
        assert storage.list(dataset_key(lower["id"])) == []
        assert (root / "small" / "train.txt").is_file()
    finally:
        close()


def test_a_subword_vocabulary_cannot_be_capped(subword_service: Any) -> None:
    service, dataset, _, _ = subword_service
    body = {"dataset_id": dataset["id"], "preset": "test", "overrides": {"vocab_size": 500, "device": "cpu"}}
    response = service.client.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert "tokenizer_vocab_size" in response.json()["detail"]


def test_a_restart_keeps_a_server_side_corpus_tokens(tmp_path: Path) -> None:
    """The start-up sweep removes dataset folders without a row, never a registered corpus' tokens."""
    root = tmp_path / "corpora"
    write_corpus(root / "small")
    service, close = open_service(tmp_path, corpus_roots={"corpora": root})
    try:
        dataset = service.client.post("/v1/datasets/builtin", json={"root": "corpora", "path": "small"}).json()
        storage, orphan = open_storage(service.settings), dataset_key("ds_0000000000000000")
        with storage.writing(join(orphan, "tokens", "train.txt")) as path:
            path.write_text("the cat\n", encoding="utf-8")
        assert storage.list(orphan)
        removed = sweep_datasets(service.engine, service.settings)
        assert removed == [orphan] == ["datasets/ds_0000000000000000"]
        assert storage.list(orphan) == []
        assert storage.exists(join(dataset_key(dataset["id"]), "tokens", "train.txt"))
    finally:
        close()
