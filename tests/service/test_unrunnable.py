"""Work no live worker can run is said at once: the submit answer of a training job or a scoring
carries a `warning` naming what no worker that beat lately offers (or that no worker beat at all),
and keeps it while queued; work a live worker can run has none. The only worker is a real process
whose CPU is held to AVX2 (oneDNN's ONEDNN_MAX_CPU_ISA), so it has no bf16, there is no GPU, and it
gives a job one process (LSTMLM_WORKER_MAX_WORLD_SIZE=1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from harness import Service, open_service, wait_for, write_corpus
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables import Worker

NO_WORKER = "no worker has sent a heartbeat in the last 120 s: it waits in the queue until a worker starts"


def lacks(needs: str) -> str:
    return (
        f"no worker that sent a heartbeat in the last 120 s offers {needs}: "
        f"it waits in the queue until a worker with {needs} starts"
    )


def score(service: Service, model: str, **form: str) -> dict[str, Any]:
    files = {"file": ("lines.txt", b"the cat sat on the mat\na big red dog\n", "text/plain")}
    response = service.client.post("/v1/scorings", data={"model": model, **form}, files=files)
    assert response.status_code == 201, response.text
    return dict(response.json())


def live_capabilities(service: Service) -> list[list[str]]:
    with Session(service.engine) as session:
        return [list(c) for c in session.scalars(select(Worker.capabilities).where(Worker.stopped_at.is_(None)))]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's workers have a GPU, and bf16 on it")
def test_work_no_live_worker_can_run_is_warned_of_in_the_submit_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, close = open_service(tmp_path)
    try:
        dataset = service.upload(write_corpus(tmp_path / "corpus"))
        first = service.submit(dataset["id"], max_max_epoch=1)
        assert first["status"] == "queued" and first["warning"] == NO_WORKER  # no worker at all yet

        with monkeypatch.context() as patch:  # only the worker's environment: it copies ours when it starts
            patch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
            worker = service.start_worker(settings=service.settings.model_copy(update={"worker_max_world_size": 1}))
        caps = wait_for(lambda: live_capabilities(service), timeout=60, what="the worker to register")
        assert caps == [["cpu"]], worker.log()  # the only worker: no cuda, no bf16, one process a job
        assert service.wait_status(first["id"], ("succeeded",), timeout=120)["warning"] is None

        on_gpu = service.submit(dataset["id"], device="cuda", precision="bf16")
        assert on_gpu["requirements"] == ["cuda", "bf16"] and on_gpu["warning"] == lacks("bf16, cuda")
        low = service.submit(dataset["id"], precision="bf16")
        assert low["warning"] == lacks("bf16")
        bf16 = score(service, first["id"], precision="bf16")
        assert bf16["status"] == "queued" and bf16["warning"] == lacks("bf16")
        fp32 = score(service, first["id"], precision="fp32")
        assert fp32["warning"] is None
        assert service.submit(dataset["id"], max_max_epoch=1, precision="fp32")["warning"] is None
        wide = service.submit(dataset["id"], world_size=2)
        assert wide["requirements"] == ["cpu", "world_size:2"] and wide["warning"] == lacks("world_size:2")

        # still queued, the GET answers keep saying it
        assert service.job(on_gpu["id"])["warning"] == lacks("bf16, cuda")
        assert service.client.get(f"/v1/scorings/{bf16['id']}").json()["warning"] == lacks("bf16")
        listed = {s["id"]: s["warning"] for s in service.client.get("/v1/scorings").json()["items"]}
        assert listed[bf16["id"]] == lacks("bf16")
        for job in (on_gpu, low, wide):
            assert service.client.post(f"/v1/jobs/{job['id']}/cancel").json()["warning"] is None  # not queued
        assert service.client.post(f"/v1/scorings/{bf16['id']}/cancel").json()["warning"] is None
    finally:
        close()
