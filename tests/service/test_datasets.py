"""Corpora: uploads listed with a cursor, server-side folders exposed by name and nothing outside them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Service, open_service, stored_state, write_corpus

from app.store.storage import join, open_storage
from app.training.datasets import DATASETS, dataset_key
from model.data import Corpus


def test_upload_list_and_get(service: Service, tiny_corpus: Path) -> None:
    created = [service.upload(tiny_corpus, name=f"corpus {i}") for i in range(3)]
    storage, stored = open_storage(service.settings), dataset_key(created[0]["id"])
    assert storage.children(stored) == ["test.txt", "tokens", "train.txt", "valid.txt"]
    sent = (tiny_corpus / "train.txt").read_bytes()
    assert storage.local_path(join(stored, "train.txt")).read_bytes() == sent  # the text as sent
    # and its tokens, what jobs train on, with the tokenizer (detected: the tiny corpus is PTB's form)
    tokens = join(stored, "tokens")
    assert storage.children(tokens) == ["test.txt", "tokenizer.json", "train.txt", "valid.txt"]
    assert storage.local_path(join(tokens, "train.txt")).read_bytes() == sent
    assert created[0]["tokenizer"] == {"kind": "ptb", "lowercase": True, "min_count": 1, "vocab_size": None}

    first = service.client.get("/v1/datasets", params={"limit": 2}).json()
    assert [d["id"] for d in first["items"]] == [created[2]["id"], created[1]["id"]]
    rest = service.client.get("/v1/datasets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [d["id"] for d in rest["items"]] == [created[0]["id"]] and rest["next_cursor"] is None
    assert service.client.get(f"/v1/datasets/{created[1]['id']}").json() == created[1]
    assert "path" not in created[0]  # server paths are never shown


@pytest.fixture
def with_roots(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    """A service exposing `corpora` (holding `small/` and `other/`); a secret corpus lies outside it."""
    root = tmp_path / "corpora"
    write_corpus(root / "small")
    write_corpus(root / "other", seed=2)
    secret = write_corpus(tmp_path / "secret", seed=5)
    os.symlink(secret, root / "escape")
    svc, close = open_service(tmp_path, corpus_roots={"corpora": root, "lonely": tmp_path / "nothing"})
    yield svc, root
    close()


def test_server_side_corpus_folders_by_name(with_roots: tuple[Service, Path]) -> None:
    svc, root = with_roots
    assert svc.client.get("/v1/datasets/roots").json() == {"roots": ["corpora", "lonely"]}
    response = svc.client.post("/v1/datasets/builtin", json={"root": "corpora", "path": "small"})
    assert response.status_code == 201
    dataset = response.json()
    corpus = Corpus.load(root / "small")
    assert dataset["source"] == "builtin" and dataset["name"] == "corpora/small"
    assert (dataset["train_tokens"], dataset["vocab_size"]) == (corpus.train.numel(), len(corpus.vocab))
    again = svc.client.post("/v1/datasets/builtin", json={"root": "corpora", "path": "small/"})
    assert again.status_code == 200 and again.json()["id"] == dataset["id"]
    # the folder is read in place; only its tokens are written, in the service's own storage
    storage, tokens = open_storage(svc.settings), join(dataset_key(dataset["id"]), "tokens")
    assert storage.children(DATASETS) == [dataset["id"]]
    assert [e.key for e in storage.list(DATASETS)] == [e.key for e in storage.list(tokens)] != []
    assert Corpus.load(storage.local_tree(tokens)).vocab == corpus.vocab
    job = svc.submit(dataset["id"])
    assert job["dataset_id"] == dataset["id"]


@pytest.mark.parametrize(
    ("path", "status", "phrase"),
    [
        ("../secret", 422, "leaves the corpus root"),
        ("small/../../secret", 422, "leaves the corpus root"),
        ("/etc", 422, "leaves the corpus root"),
        ("escape", 422, "leaves the corpus root"),  # a symlink pointing outside
        ("missing", 404, "no such corpus folder"),
        ("", 422, "no ptb.train.txt or train.txt"),  # the root itself holds no corpus files
    ],
)
def test_no_path_outside_a_corpus_root(with_roots: tuple[Service, Path], path: str, status: int, phrase: str) -> None:
    svc, root = with_roots
    before = stored_state(svc)
    response = svc.client.post("/v1/datasets/builtin", json={"root": "corpora", "path": path})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert phrase in response.json()["detail"]
    assert str(root) not in response.text and str(root.parent) not in response.text
    assert stored_state(svc) == before


def test_a_dataset_records_its_tokenizer(service: Service, tmp_path: Path) -> None:
    """Given at upload, or detected from the training text where it is obvious; `convention` is the
    earlier name and still answers."""
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    for split in ("train", "valid", "test"):
        (wiki / f"{split}.txt").write_text(" = Title = \n the role @-@ playing game of 1 @,@ 000 units .\n")
    plain = write_corpus(tmp_path / "plain", seed=3)
    (plain / "train.txt").write_text((plain / "train.txt").read_text() + "The Cat sat 3 times\n")
    detected = service.upload(wiki)
    assert (detected["tokenizer"]["kind"], detected["convention"]) == ("wikitext", "wikitext")
    assert service.upload(plain)["tokenizer"]["kind"] == "whitespace"
    assert service.upload(plain)["convention"] == "plain"
    files = {s: (f"{s}.txt", (plain / f"{s}.txt").read_bytes(), "text/plain") for s in ("train", "valid", "test")}
    for field in ("convention", "tokenizer"):
        given = service.client.post("/v1/datasets", files=files, data={field: "ptb"})
        assert given.status_code == 201 and given.json()["tokenizer"]["kind"] == "ptb"
        assert service.client.get(f"/v1/datasets/{given.json()['id']}").json()["convention"] == "ptb"
    before = stored_state(service)
    for data, phrase in [
        ({"convention": "klingon"}, "convention"),
        ({"tokenizer": "klingon"}, "tokenizer"),
        ({"tokenizer": "ptb", "convention": "wikitext"}, "disagree"),
        ({"tokenizer": "bpe", "min_count": "2"}, "min_count"),
        ({"tokenizer": "ptb", "tokenizer_vocab_size": "1000"}, "tokenizer_vocab_size"),
        ({"tokenizer": "bpe", "tokenizer_vocab_size": "10"}, "tokenizer_vocab_size"),
        ({"tokenizer": "bpe", "tokenizer_vocab_size": str(10**9)}, "tokenizer_vocab_size"),
        ({"min_count": "0"}, "min_count"),
    ]:
        refused = service.client.post("/v1/datasets", files=files, data=data)
        assert refused.status_code == 422, (data, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert phrase in refused.text, (data, refused.text)
    assert stored_state(service) == before
