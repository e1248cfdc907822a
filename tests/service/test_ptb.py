"""End to end on the real Penn Treebank through the API: a server-side corpus root, one short epoch
of the small preset (capped by max_steps_per_epoch), and its perplexities. Skipped where the data
folder ($PTB_DIR or ../shared/data/ptb) is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from harness import REPO, Service, open_service

from app.store.storage import join, open_storage
from app.training.datasets import dataset_key
from model.data import read_tokens

PTB_DIR = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
STEPS = 200

pytestmark = [
    pytest.mark.ptb,
    pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").is_file(), reason=f"no PTB corpus at {PTB_DIR}"),
]


@pytest.fixture(scope="module")
def ptb_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("ptb")
    svc, close = open_service(tmp, corpus_roots={"ptb": PTB_DIR}, torch_threads=None, lease_seconds=30)
    yield svc
    close()


@pytest.fixture(scope="module")
def ptb_dataset(ptb_service: Service) -> dict[str, Any]:
    """PTB registered from the server-side root, its tokenizer detected (once for the module: cutting
    PTB's 5 MB takes a while)."""
    response = ptb_service.client.post("/v1/datasets/builtin", json={"root": "ptb"})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.slow  # 200 steps of the small preset and full validation and test passes on PTB
def test_small_preset_trains_on_ptb_through_the_api(ptb_service: Service, ptb_dataset: dict[str, Any]) -> None:
    svc, dataset = ptb_service, ptb_dataset
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


def test_ptb_tokenized_as_ptb_or_whitespace_is_exactly_its_own_tokens(
    ptb_service: Service, ptb_dataset: dict[str, Any]
) -> None:
    """Registered as today (its tokenizer detected: ptb) or with whitespace, PTB's tokens are the files'
    own, every one of them in all three files: the reproduction's numbers cannot move."""
    svc, detected = ptb_service, ptb_dataset
    assert detected["tokenizer"] == {"kind": "ptb", "lowercase": True, "min_count": 1, "vocab_size": None}
    plain = svc.client.post("/v1/datasets/builtin", json={"root": "ptb", "tokenizer": "whitespace"}).json()
    assert plain["id"] != detected["id"] and plain["tokenizer"]["kind"] == "whitespace"
    for dataset in (detected, plain):
        tokens = open_storage(svc.settings).local_tree(join(dataset_key(dataset["id"]), "tokens"))
        for split in ("train", "valid", "test"):
            assert read_tokens(tokens / f"{split}.txt") == read_tokens(PTB_DIR / f"ptb.{split}.txt"), split
        assert dataset["vocab_size"] == 10_000 and dataset["splits"]["test"]["unk"] == 4_794  # its own <unk>s
    assert svc.client.delete(f"/v1/datasets/{plain['id']}").status_code == 204  # "ptb" names one dataset again


def test_the_test_preset_runs_in_seconds_on_ptb_as_estimated_and_the_paper_comparison(
    ptb_service: Service, ptb_dataset: dict[str, Any]
) -> None:
    """The test preset caps each epoch at 100 steps: a smoke run through the whole pipeline (validation
    and test passes included) whose estimate agrees with the measured time within a factor of 3. An
    unmodified paper preset on PTB is comparable with the paper; a capped one says why not."""
    svc, dataset = ptb_service, ptb_dataset
    body = {"dataset_id": dataset["name"], "preset": "test", "name": "smoke"}
    estimate = svc.client.post("/v1/jobs/estimate", json=body).json()
    assert estimate["fits"] and estimate["steps_per_epoch"] == 100, estimate
    job = svc.client.post("/v1/jobs", json=body).json()
    assert job["dataset_id"] == dataset["id"] and job["estimate"]["total_seconds"] == estimate["total_seconds"]
    worker = svc.start_worker("--once")
    assert worker.wait(300) == 0, worker.log()
    done = svc.job(job["id"])
    assert done["status"] == "succeeded" and done["progress"]["steps"] == 100, done
    assert done["test_ppl"] is not None and done["best_valid_ppl"] is not None
    measured = (
        datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])
    ).total_seconds()
    assert estimate["total_seconds"] / 3 <= measured <= estimate["total_seconds"] * 3, (measured, estimate)
    assert done["paper"]["comparable"] is False and "test preset" in done["paper"]["reason"]

    small = svc.client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "small"}).json()
    assert small["paper"] == {"test_ppl": 114.5, "comparable": True, "reason": None}
    capped = {"dataset_id": dataset["id"], "preset": "medium", "overrides": {"max_steps_per_epoch": 300}}
    medium = svc.client.post("/v1/jobs", json=capped).json()
    assert medium["paper"] == {
        "test_ppl": 82.7,
        "comparable": False,
        "reason": "max_steps_per_epoch caps each epoch at 300 of 1,327 steps",
    }
    for queued in (small, medium):
        assert svc.client.post(f"/v1/jobs/{queued['id']}/cancel").json()["status"] == "canceled"
    # the large preset's 55 epochs on this server's CPU are past the 24 h job limit
    large = svc.client.post(
        "/v1/jobs", json={"dataset_id": dataset["id"], "preset": "large", "overrides": {"device": "cpu"}}
    )
    assert large.status_code == 422, large.text
    assert "on this server's cpu (no worker is live), past the 24.0 h job limit" in large.json()["detail"]
