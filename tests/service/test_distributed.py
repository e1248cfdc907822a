"""`world_size` through the service: a batch the processes cannot share is a 422 at submission, and
a job on two processes, run by a real worker (rank 0 in the worker, rank 1 a process of its own),
succeeds with the perplexities of the same job on one."""

from __future__ import annotations

from pathlib import Path

from harness import TINY, Service


def test_a_job_on_two_processes_gives_the_perplexities_of_one(service: Service, tiny_corpus: Path) -> None:
    dataset = service.upload(tiny_corpus)
    for overrides, says in (
        ({"world_size": 3}, "batch_size 4 is not divisible by world_size 3"),
        ({"world_size": 65}, "world_size must be an integer in [1, 64]"),
    ):
        body = {"dataset_id": dataset["id"], "preset": "test", "overrides": {**TINY, **overrides}}
        response = service.client.post("/v1/jobs", json=body)
        assert response.status_code == 422 and says in response.json()["detail"], response.text

    one = service.submit(dataset["id"])  # the test preset: no dropout
    two = service.submit(dataset["id"], world_size=2)
    assert two["config"]["world_size"] == 2 and two["requirements"] == ["cpu", "world_size:2"]
    worker = service.start_worker("--burst", settings=service.settings.model_copy(update={"worker_max_world_size": 2}))
    assert worker.wait(180) == 0, worker.log()

    done_one, done_two = service.job(one["id"]), service.job(two["id"])
    assert done_one["status"] == done_two["status"] == "succeeded", (done_one, done_two, worker.log())
    for key in ("latest_valid_ppl", "best_valid_ppl", "test_ppl"):
        assert abs(done_two[key] - done_one[key]) <= 1e-5 * done_one[key], key
    valid_one, valid_two = ([m["value"] for m in service.metrics(job["id"], "valid_ppl")] for job in (one, two))
    assert len(valid_two) == len(valid_one) == 2
    assert all(abs(a - b) <= 1e-5 * b for a, b in zip(valid_two, valid_one, strict=True))
    lines = service.client.get(f"/v1/jobs/{two['id']}/logs").json()["items"]
    assert any("x 2 processes" in line["message"] for line in lines), lines
