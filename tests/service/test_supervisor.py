"""`python -m app run` keeps its workers alive and its queue moving: a worker killed with SIGKILL is
reaped (no zombie) and restarted within seconds, and its job ends with the numbers of an
uninterrupted run; with no worker alive at all, the API's own sweep puts expired leases back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from harness import TINY, wait_for, write_corpus
from sqlalchemy.orm import Session

from app.scorings.lease import claim_next_scoring
from app.store.db import make_engine
from app.store.tables import Scoring, new_id
from app.training.queue import claim_next
from model.config import preset
from service.test_resilience import RESUMABLE, reference_run
from service.test_serve import Served, alive


def children(parent: int) -> dict[int, tuple[str, str]]:
    """The processes whose parent is `parent`, from /proc: pid -> (state, command line)."""
    found: dict[int, tuple[str, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == parent:
            found[int(entry.name)] = (fields[0], cmdline)
    return found


def worker_pids(parent: int) -> list[int]:
    """The live `python -m worker` children of `parent`."""
    return [pid for pid, (state, cmd) in children(parent).items() if "-m worker" in cmd and state != "Z"]


def test_a_killed_worker_is_reaped_and_restarted_and_its_job_ends_with_the_same_numbers(tmp_path: Path) -> None:
    config = preset("test", **{**TINY, **RESUMABLE}).to_dict()
    corpus = write_corpus(tmp_path / "corpus", train=1500, valid=80, test=40, seed=3)
    history, test_ppl = reference_run(corpus, config)

    served = Served(tmp_path, workers=1, LSTMLM_LEASE_SECONDS="4")
    try:
        client = httpx.Client(base_url=served.url, timeout=10)
        files = {s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")}
        dataset = client.post("/v1/datasets", files=files).json()
        answer = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": config})
        job_id = answer.json()["id"]

        def in_second_epoch() -> bool:
            progress = client.get(f"/v1/jobs/{job_id}").json()["progress"] or {}
            return progress.get("epoch") == 2 and progress.get("phase") == "train" and progress.get("step", 0) >= 20

        wait_for(in_second_epoch, timeout=90, interval=0.05, what="the job to be inside epoch 2")
        (first,) = worker_pids(served.proc.pid)
        os.kill(first, signal.SIGKILL)

        # a new worker process within seconds, and the killed one reaped: no zombie left behind
        (second,) = wait_for(
            lambda: [p for p in worker_pids(served.proc.pid) if p != first] or None,
            timeout=10,
            interval=0.05,
            what="a new worker process",
        )
        assert first not in children(served.proc.pid), children(served.proc.pid)
        assert f"worker 1 (pid {first}) killed by signal SIGKILL" in served.output()
        assert f"worker 1 restarted (pid {second}, restart 1)" in served.output()

        def finished() -> dict[str, object] | None:
            job = client.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in ("succeeded", "failed", "canceled") else None

        done = wait_for(finished, timeout=180, interval=0.2, what="the job to finish")
        assert done["status"] == "succeeded" and done["attempt"] == 2, (done, served.output())

        def values(key: str) -> list[float]:
            params: dict[str, str | int] = {"key": key, "limit": 10_000}
            return [p["value"] for p in client.get(f"/v1/jobs/{job_id}/metrics", params=params).json()["metrics"]]

        assert values("train_ppl") == [h["train_ppl"] for h in history]
        assert values("valid_ppl") == [h["valid_ppl"] for h in history]
        assert done["test_ppl"] == test_ppl
        assert client.get("/readyz").status_code == 200  # the restarted worker beats
        assert worker_pids(served.proc.pid) == [second]
        assert not [pid for pid, (state, _) in children(served.proc.pid).items() if state == "Z"]

        served.proc.send_signal(signal.SIGTERM)  # a clean stop restarts nothing
        assert served.proc.wait(timeout=60) == 0, served.output()
        assert not alive(second)
        assert served.output().count("restarted (pid") == 1, served.output()
    finally:
        served.kill()


def test_with_no_worker_alive_the_api_puts_expired_leases_back(tmp_path: Path) -> None:
    served = Served(tmp_path, workers=0, LSTMLM_LEASE_SECONDS="1")  # swept every quarter second
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'service.db'}")
    try:
        client = httpx.Client(base_url=served.url, timeout=10)
        corpus = write_corpus(tmp_path / "corpus")
        files = {s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")}
        dataset = client.post("/v1/datasets", files=files).json()
        answer = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": TINY})
        job_id = answer.json()["id"]
        scoring_id = new_id("scr")
        with Session(engine) as session, session.begin():  # a scoring as POST /v1/scorings leaves it
            session.add(
                Scoring(
                    id=scoring_id,
                    status="queued",
                    model="m",
                    checkpoint_id="ckpt_0",
                    checkpoint_path=str(tmp_path / "none.pt"),
                    source="upload",
                    input_path=str(tmp_path / "none.txt"),
                    options={},
                    total_lines=1,
                    max_attempts=3,
                )
            )

        # a worker claims both, then dies: nothing renews the leases and no worker is left to look
        claimed = claim_next(engine, "ghost", lease_seconds=1)
        assert claimed is not None and claimed.id == job_id
        assert claim_next_scoring(engine, "ghost", lease_seconds=1) is not None
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

        def requeued() -> bool:
            with Session(engine) as session:
                scoring = session.get_one(Scoring, scoring_id)
                return scoring.status == "queued" and client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"

        wait_for(requeued, timeout=10, interval=0.1, what="the API to requeue the expired leases")
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["error"] == "worker lost (lease expired) on attempt 1 of 3; requeued"
        assert job["worker_id"] is None and job["attempt"] == 1
        with Session(engine) as session:
            scoring = session.get_one(Scoring, scoring_id)
            assert scoring.error == "worker lost (lease expired) on attempt 1 of 3; requeued"
            assert scoring.worker_id is None and scoring.lease_expires_at is None
        assert client.get("/readyz").status_code == 503  # and indeed no worker is alive
        wait_for(lambda: "whose lease expired" in served.output(), timeout=5, what="the sweep's log line")
    finally:
        engine.dispose()
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=30)
        served.kill()
