"""What a training run records must be one consistent history and an honest outcome: one metric
point per key and step whatever the step cap, and a run whose validation perplexity is worse than a
uniform guess over its vocabulary fails as diverged instead of succeeding."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest
from harness import Service, wait_for, write_corpus

SENTENCES = ("the cat sat on the mat", "a dog ran to the park", "the big red dog sat", "a cat ran fast")
CAPS = range(1, 121)
EPOCHS = 2


def learnable_corpus(folder: Path) -> Path:
    """Lines drawn from four sentences: a tiny model gets below a uniform guess after any number of steps."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 500), ("valid", 30), ("test", 15)):
        text = "".join(f"{rng.choice(SENTENCES)}\n" for _ in range(lines))
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.slow  # 120 jobs through one worker; the unique index itself is checked on both databases by the migrations
def test_one_metric_point_per_key_and_step_at_every_step_cap(service: Service, tmp_path: Path) -> None:
    dataset = service.upload(learnable_corpus(tmp_path / "corpus"))
    jobs = {cap: service.submit(dataset["id"], max_max_epoch=EPOCHS, max_steps_per_epoch=cap)["id"] for cap in CAPS}
    worker = service.start_worker("--burst")
    assert worker.wait(600) == 0, worker.log()
    for cap, job_id in jobs.items():
        job = service.job(job_id)
        assert job["status"] == "succeeded", (cap, job, worker.log())
        assert job["progress"]["steps"] == cap
        points = service.metrics(job_id)
        counts = Counter((p["key"], p["step"]) for p in points)
        assert [kept for kept, n in counts.items() if n > 1] == [], f"duplicates at step cap {cap}"
        steps = {key: {s for k, s in counts if k == key} for key in {k for k, _ in counts}}
        ends = {epoch * cap for epoch in range(1, EPOCHS + 1)}
        # every epoch's summary at its last step; lr and wps also at the progress points before it
        for key in ("train_ppl", "valid_ppl"):
            assert steps[key] == ends, (cap, key)
        assert steps["lr"] == steps["wps"] == (steps["train_ppl_running"] | ends), cap
        assert steps["test_ppl"] == {EPOCHS * cap}
        by_key_step = {(p["key"], p["step"]): p["value"] for p in points}
        assert by_key_step[("lr", cap)] == job["config"]["learning_rate"]


def test_a_run_worse_than_a_uniform_guess_fails_as_diverged(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    assert dataset["vocab_size"] == 14
    # Inside every bound, with a finite loss: the validation perplexity after one epoch is about 4e77.
    extreme = service.submit(dataset["id"], learning_rate=100, max_grad_norm=1e6, init_scale=10)
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    job = service.job(extreme["id"])
    assert job["status"] == "failed" and job["attempt"] == 1, (job, worker.log())
    match = re.fullmatch(
        r"diverged: validation perplexity (\S+) is above the vocabulary size 14 at epoch 1", job["error"]
    )
    assert match is not None, job["error"]
    assert float(match.group(1)) > 1e70
    assert job["test_ppl"] is None and job["latest_valid_ppl"] is None
    assert service.client.get(f"/v1/jobs/{extreme['id']}/checkpoints").json()["items"] == []
    lines = [line["message"] for line in service.client.get(f"/v1/jobs/{extreme['id']}/logs").json()["items"]]
    assert lines[-1] == f"failed: {job['error']}"
    assert [p["key"] for p in service.metrics(extreme["id"], "valid_ppl", "test_ppl")] == []


def test_a_run_that_becomes_worse_than_uniform_at_a_later_epoch_fails_there(service: Service, tmp_path: Path) -> None:
    # The default tiny corpus is close to random words: after 92 steps the model is at 12.7 after its
    # first epoch (below 14 words) and at 14.4 after its second.
    dataset = service.upload(write_corpus(tmp_path / "corpus"))
    job_id = service.submit(dataset["id"], max_steps_per_epoch=92)["id"]
    worker = service.start_worker("--burst")
    assert worker.wait(120) == 0, worker.log()
    job = wait_for(lambda: service.job(job_id), 5)
    assert job["status"] == "failed", (job, worker.log())
    assert re.fullmatch(
        r"diverged: validation perplexity 14\.\d+ is above the vocabulary size 14 at epoch 2", job["error"]
    )
    valid = service.metrics(job_id, "valid_ppl")
    assert [(p["step"], round(p["value"], 1)) for p in valid] == [(92, 12.7)]  # the first epoch's, recorded
    assert job["best_valid_ppl"] == valid[0]["value"]
