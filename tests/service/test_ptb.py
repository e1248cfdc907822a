"""End to end on the real Penn Treebank through the API: a server-side corpus root, one short epoch
of the small preset (capped by max_steps_per_epoch), and its perplexities. Skipped where the data
folder ($PTB_DIR or ../shared/data/ptb) is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO, Service, open_service

from model.data import read_tokens

PTB_DIR = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
STEPS = 200

pytestmark = [
    pytest.mark.ptb,
    pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").is_file(), reason=f"no PTB corpus at {PTB_DIR}"),
]


@pytest.fixture
def ptb_service(tmp_path: Path) -> Iterator[Service]:
    svc, close = open_service(tmp_path, corpus_roots={"ptb": PTB_DIR}, torch_threads=None, lease_seconds=30)
    yield svc
    close()


def test_small_preset_trains_on_ptb_through_the_api(ptb_service: Service) -> None:
    svc = ptb_service
    response = svc.client.post("/v1/datasets/builtin", json={"root": "ptb"})
    assert response.status_code == 201, response.text
    dataset = response.json()
    # the seed's reader: 10,000 types counting <eos>; 929,589 / 73,760 / 82,430 tokens
    assert (dataset["vocab_size"], dataset["train_tokens"]) == (10_000, 929_589)
    assert (dataset["valid_tokens"], dataset["test_tokens"]) == (73_760, 82_430)

    body = {
        "dataset_id": dataset["id"],
        "preset": "small",
        "overrides": {"max_max_epoch": 1, "max_steps_per_epoch": STEPS},
    }
    job = svc.client.post("/v1/jobs", json=body).json()
    assert job["config"]["hidden_size"] == 200 and job["config"]["num_steps"] == 20
    worker = svc.start_worker("--once")
    assert worker.wait(420) == 0, worker.log()
    done = svc.job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["steps"] == STEPS
    running = [p["value"] for p in svc.metrics(job["id"], "train_ppl_running")]
    assert len(running) >= 9 and running[-1] < running[0]  # it learns
    # 200 steps of the small model: far below the 10,000 of a uniform guess, far above a full run's ~120
    assert 200 < done["latest_valid_ppl"] < 2_000
    assert 200 < done["test_ppl"] < 2_000
    assert abs(done["test_ppl"] - done["latest_valid_ppl"]) / done["latest_valid_ppl"] < 0.2


def test_ptb_tokenized_as_ptb_or_whitespace_is_exactly_its_own_tokens(ptb_service: Service) -> None:
    """Registered as today (its tokenizer detected: ptb) or with whitespace, PTB's tokens are the files'
    own, every one of them in all three files: the reproduction's numbers cannot move."""
    svc = ptb_service
    detected = svc.client.post("/v1/datasets/builtin", json={"root": "ptb"}).json()
    assert detected["tokenizer"] == {"kind": "ptb", "lowercase": True, "min_count": 1, "vocab_size": None}
    plain = svc.client.post("/v1/datasets/builtin", json={"root": "ptb", "tokenizer": "whitespace"}).json()
    assert plain["id"] != detected["id"] and plain["tokenizer"]["kind"] == "whitespace"
    for dataset in (detected, plain):
        tokens = svc.settings.datasets_dir / dataset["id"] / "tokens"
        for split in ("train", "valid", "test"):
            assert read_tokens(tokens / f"{split}.txt") == read_tokens(PTB_DIR / f"ptb.{split}.txt"), split
        assert dataset["vocab_size"] == 10_000 and dataset["splits"]["test"]["unk"] == 4_794  # its own <unk>s
