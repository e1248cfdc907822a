"""Workers that die or are stopped: kill -9 mid-job, SIGTERM, expired leases, stale writers.

A job interrupted any of these ways must end with exactly the numbers an uninterrupted run of the
same seed gives; the reference run is computed here in-process with the same training core.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import TINY, Service, wait_for, write_corpus
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.storage import join, open_storage
from app.store.tables import Job, Metric, Worker
from app.training.attempt import Attempt, LeaseLost, MetricPoint
from app.training.checkpoints import checkpoint_key, job_key
from app.training.datasets import dataset_key
from app.training.queue import claim_next, requeue_expired
from model.config import ModelConfig, preset
from model.data import Corpus
from model.train import Trainer

EPOCHS = 3
RESUMABLE: dict[str, Any] = {"max_max_epoch": EPOCHS, "keep_prob": 0.9, "seed": 7}


@pytest.fixture(scope="module")
def long_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~10k training tokens: about 500 steps, a second or two, per epoch."""
    return write_corpus(tmp_path_factory.mktemp("long") / "corpus", train=1500, valid=80, test=40, seed=3)


def reference_run(corpus: Path, config: dict[str, Any]) -> tuple[list[dict[str, float]], float]:
    """Per-epoch results and test perplexity of an uninterrupted run (one thread, like the workers)."""
    torch.set_num_threads(1)
    cfg = ModelConfig.from_dict(config)
    trainer = Trainer(cfg, Corpus.load(corpus, cfg.vocab_size))
    assert trainer.fit()
    assert trainer.state.test_ppl is not None
    return trainer.state.history, trainer.state.test_ppl


@pytest.fixture(scope="module")
def reference(long_corpus: Path) -> tuple[list[dict[str, float]], float]:
    """The uninterrupted run of the config the tests below submit."""
    return reference_run(long_corpus, preset("test", **{**TINY, **RESUMABLE}).to_dict())


def assert_same_numbers(svc: Service, job: dict[str, Any], reference: tuple[list[dict[str, float]], float]) -> None:
    history, test_ppl = reference
    assert job["config"] == preset("test", **{**TINY, **RESUMABLE}).to_dict()
    assert [p["value"] for p in svc.metrics(job["id"], "train_ppl")] == [h["train_ppl"] for h in history]
    assert [p["value"] for p in svc.metrics(job["id"], "valid_ppl")] == [h["valid_ppl"] for h in history]
    assert job["test_ppl"] == test_ppl
    # one history: the lost attempt's points past its checkpoint were replaced, not duplicated
    running = [(p["step"]) for p in svc.metrics(job["id"], "train_ppl_running")]
    assert running == sorted(set(running))


def test_kill_9_mid_job_resumes_from_the_last_checkpoint_with_the_same_numbers(
    service: Service, long_corpus: Path, reference: tuple[list[dict[str, float]], float]
) -> None:
    dataset = service.upload(long_corpus)
    job = service.submit(dataset["id"], **RESUMABLE)
    first = service.start_worker()

    def in_second_epoch() -> bool:
        progress = service.job(job["id"])["progress"] or {}
        return progress.get("epoch") == 2 and progress.get("phase") == "train" and progress.get("step", 0) >= 20

    wait_for(in_second_epoch, timeout=60, interval=0.02, what="the job to be inside epoch 2")
    first.signal(signal.SIGKILL)
    first.wait(10)
    assert service.job(job["id"])["status"] == "running"  # nobody knows yet: the lease still runs

    second = service.start_worker()
    done = service.wait_status(job["id"], ("succeeded", "failed"), timeout=90)
    assert done["status"] == "succeeded", second.log()
    assert done["attempt"] == 2 and done["error"] is None
    assert "resuming at epoch 1 step 0" in second.log()
    assert_same_numbers(service, done, reference)
    second.signal(signal.SIGTERM)
    assert second.wait(20) == 0


def test_sigterm_checkpoints_requeues_and_the_next_worker_resumes_mid_epoch(
    service: Service, long_corpus: Path, reference: tuple[list[dict[str, float]], float]
) -> None:
    dataset = service.upload(long_corpus)
    job = service.submit(dataset["id"], **RESUMABLE)
    first = service.start_worker()

    def mid_epoch() -> bool:
        progress = service.job(job["id"])["progress"] or {}
        # progress is at most one log interval (a tenth of an epoch) old: stay well before the end
        return progress.get("phase") == "train" and 20 <= progress.get("step", 0) <= progress.get("steps", 0) - 150

    wait_for(mid_epoch, timeout=60, interval=0.02, what="the job to be in the middle of an epoch")
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.log()

    queued = service.job(job["id"])
    assert queued["status"] == "queued" and queued["attempt"] == 1 and queued["worker_id"] is None
    # a planned hand-back is no error: the status message says where it stopped and where it resumes
    assert queued["error"] is None and queued["queue_position"] == 0
    assert "handed back at epoch 1" in queued["message"] and "resumes from its checkpoint" in queued["message"]
    assert queued["max_attempts"] == service.settings.max_attempts + 1  # a clean hand-back costs no attempt
    checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    last = checkpoints[-1]
    assert last["kind"] == "interrupt" and last["step"] % queued["progress"]["steps"] != 0

    second = service.start_worker("--once")
    assert second.wait(90) == 0, second.log()
    done = service.job(job["id"])
    assert done["status"] == "succeeded" and done["attempt"] == 2
    epoch, step = last["epoch"], last["step"] - last["epoch"] * queued["progress"]["steps"]
    assert f"resuming at epoch {epoch} step {step}" in second.log()
    assert_same_numbers(service, done, reference)
    # the job's own log tells the story: the hand-back with its checkpoint, then the resume from it
    messages = [line["message"] for line in service.client.get(f"/v1/jobs/{job['id']}/logs").json()["items"]]
    assert any(m.startswith("handed back to the queue") and last["id"] in m for m in messages)
    assert any(m.startswith(f"attempt 2 of 4: resuming from checkpoint {last['id']}") for m in messages)


def test_idle_worker_exits_0_on_sigterm_and_says_so(service: Service) -> None:
    worker = service.start_worker()

    def registered() -> str | None:
        with Session(service.engine) as session:
            return session.scalar(select(Worker.id))

    wait_for(registered, timeout=30, what="the worker to register")
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    with Session(service.engine) as session:
        row = session.scalars(select(Worker)).one()
        assert row.stopped_at is not None and row.pid == worker.pid


def expire(service: Service, job_id: str) -> None:
    """Let a lease run out (the ghost worker never renews it) and be settled, by this requeue or by
    the API's periodic sweep of expired leases, whichever comes first."""
    with Session(service.engine) as session:
        lease = session.get_one(Job, job_id).lease_expires_at
    assert lease is not None

    def settled() -> bool:
        requeue_expired(service.engine)
        with Session(service.engine) as session:
            return session.get_one(Job, job_id).lease_expires_at is None

    wait_for(settled, timeout=5, interval=0.02, what="the lease to expire")


def test_expired_leases_requeue_then_fail_after_max_attempts(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"])
    for attempt in range(1, service.settings.max_attempts + 1):
        claimed = claim_next(service.engine, f"ghost-{attempt}", lease_seconds=0.05)
        assert claimed is not None and claimed.id == job["id"] and claimed.attempt == attempt
        expire(service, job["id"])
        after = service.job(job["id"])
        if attempt < service.settings.max_attempts:
            assert after["status"] == "queued" and after["worker_id"] is None
            assert f"lease expired) on attempt {attempt} of {service.settings.max_attempts}; requeued" in after["error"]
            assert "previous attempt: worker lost" in after["message"]
    failed = service.job(job["id"])
    assert failed["status"] == "failed" and failed["finished_at"] is not None
    assert failed["error"] == "worker lost (lease expired) on attempt 3 of 3; no attempts left"
    assert claim_next(service.engine, "ghost-x", lease_seconds=1) is None


def test_a_canceling_job_whose_worker_died_is_canceled(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"])
    assert claim_next(service.engine, "ghost", lease_seconds=0.05) is not None
    assert service.client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceling"
    expire(service, job["id"])
    assert service.job(job["id"])["status"] == "canceled"


def test_a_stale_attempt_cannot_write_over_a_newer_one(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"])
    old = claim_next(service.engine, "slow", lease_seconds=0.05)
    assert old is not None
    expire(service, job["id"])
    new = claim_next(service.engine, "fresh", lease_seconds=30)
    assert new is not None and new.attempt == old.attempt + 1

    stale = Attempt(service.engine, job["id"], old.attempt, "slow", 30, open_storage(service.settings))
    point = [MetricPoint("train_ppl_running", 1.0, 1, 1)]
    for write in (
        stale.renew,
        stale.status,
        lambda: stale.report({"epoch": 99}, point),
        lambda: stale.fail("stale"),
        lambda: stale.stop("queued", None, 2),
    ):
        with pytest.raises(LeaseLost):
            write()
    current = service.job(job["id"])
    assert (current["status"], current["attempt"], current["worker_id"]) == ("running", 2, "fresh")
    assert current["progress"] is None
    with Session(service.engine) as session:
        assert session.scalars(select(Metric)).all() == []

    fresh = Attempt(service.engine, job["id"], new.attempt, "fresh", 30, open_storage(service.settings))
    assert fresh.report({"epoch": 1}, point) == "running"
    assert service.metrics(job["id"]) == [
        {"key": "train_ppl_running", "value": 1.0, "step": 1, "timestamp": service.metrics(job["id"])[0]["timestamp"]}
    ]


def test_a_job_whose_corpus_became_unreadable_fails_with_the_reason(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    job = service.submit(dataset["id"])
    # what jobs read: the dataset's tokens
    with open_storage(service.settings).writing(join(dataset_key(dataset["id"]), "tokens", "valid.txt")) as path:
        path.write_bytes(b"\xff\xfe broken\n")
    worker = service.start_worker("--once")
    assert worker.wait(60) == 0, worker.log()
    failed = service.job(job["id"])
    assert failed["status"] == "failed" and failed["attempt"] == 1  # a permanent error is not retried
    assert failed["error"].startswith("CorpusError:") and "not UTF-8" in failed["error"]
    assert failed["message"] == failed["error"] and failed["finished_at"] is not None


def test_a_worker_killed_mid_checkpoint_leaves_nothing_and_a_corrupt_latest_checkpoint_falls_back(
    service: Service, long_corpus: Path, reference: tuple[list[dict[str, float]], float]
) -> None:
    dataset = service.upload(long_corpus)
    job = service.submit(dataset["id"], **RESUMABLE)
    first = service.start_worker()

    def in_third_epoch() -> bool:
        progress = service.job(job["id"])["progress"] or {}
        return progress.get("epoch") == 3 and progress.get("phase") == "train" and progress.get("step", 0) >= 20

    wait_for(in_third_epoch, timeout=90, interval=0.02, what="the job to be inside epoch 3")
    first.signal(signal.SIGKILL)
    first.wait(10)
    # What a kill during a checkpoint write leaves (an unfinished write, `.<name>.<random>.partial`,
    # a file written but never recorded), and a latest checkpoint the storage corrupted.
    storage = open_storage(service.settings)
    rows = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
    assert [r["epoch"] for r in rows] == [1, 2]
    latest = checkpoint_key(job["id"], rows[-1]["id"])
    content = storage.local_path(latest).read_bytes()
    leftovers = {
        join(job_key(job["id"]), f".{rows[-1]['id']}.pt.k1ll3d.partial"): content[: len(content) // 2],
        checkpoint_key(job["id"], "ckpt_00000000deadbeef"): content,
        latest: content[: len(content) // 3],
    }
    for key, data in leftovers.items():
        with storage.writing(key) as path:
            path.write_bytes(data)

    second = service.start_worker()
    done = service.wait_status(job["id"], ("succeeded", "failed"), timeout=120)
    assert done["status"] == "succeeded", second.log()
    log = second.log()
    assert f"checkpoint {rows[-1]['id']} unusable" in log and "resuming at epoch 1 step 0" in log
    assert "a checkpoint write that never finished" in log and "a checkpoint file without a checkpoint" in log
    assert_same_numbers(service, done, reference)
    recorded = {Path(r["download_url"]).parent.name + ".pt" for r in _checkpoints(service, job["id"])}
    assert {entry.key.rsplit("/", 1)[-1] for entry in storage.list(job_key(job["id"]))} == recorded
    second.signal(signal.SIGTERM)
    assert second.wait(20) == 0


def _checkpoints(service: Service, job_id: str) -> list[dict[str, Any]]:
    response = service.client.get(f"/v1/jobs/{job_id}/checkpoints")
    assert response.status_code == 200
    return list(response.json()["items"])


def test_a_device_no_worker_has_waits_with_a_reason_and_a_diverged_run_fails_at_once(
    service: Service, tiny_corpus: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine's workers have a GPU")
    dataset = service.upload(tiny_corpus)
    on_gpu = service.submit(dataset["id"], device="cuda")
    diverging = service.submit(
        dataset["id"], learning_rate=100.0, init_scale=10.0, max_grad_norm=1e6, hidden_size=200, max_steps_per_epoch=50
    )
    worker = service.start_worker()
    failed = service.wait_status(diverging["id"], ("succeeded", "failed"), timeout=60)
    assert failed["status"] == "failed" and failed["attempt"] == 1, worker.log()
    assert failed["error"].startswith("Diverged: diverged at epoch 1 step")
    assert failed["test_ppl"] is None and not _checkpoints(service, diverging["id"])

    waiting = service.job(on_gpu["id"])  # older than the diverged job, yet never claimed
    assert waiting["status"] == "queued" and waiting["attempt"] == 0 and waiting["requirements"] == ["cuda"]
    assert "waiting for a worker with cuda: no running worker has it" in waiting["message"]
    assert service.client.post(f"/v1/jobs/{on_gpu['id']}/cancel").json()["status"] == "canceled"
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def test_a_job_over_its_wall_time_fails_with_the_reason(tmp_path: Path, tiny_corpus: Path) -> None:
    from harness import open_service

    svc, close = open_service(tmp_path / "svc")
    try:
        dataset = svc.upload(tiny_corpus)
        job = svc.submit(dataset["id"], max_max_epoch=1000)  # the API takes it: its estimate is minutes
        # the worker enforces its own limit: one second, whatever the estimate said
        worker = svc.start_worker(settings=svc.settings.model_copy(update={"max_job_seconds": 1.0}))
        done = svc.wait_status(job["id"], ("succeeded", "failed", "canceled"), timeout=60)
        assert done["status"] == "failed" and "over the maximum wall time of 1 s" in done["error"], worker.log()
    finally:
        close()
