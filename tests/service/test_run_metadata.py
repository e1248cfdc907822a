"""Run metadata and finding runs: names, tags and notes on jobs and scorings (at submission and by
PATCH), the job and scoring list filters and sorts with their cursors, datasets named by a unique
name, the estimate endpoint and the job time limit, ETA, the paper comparison, and validation
problems in words. One service with authentication, one trained job; the rest stay queued."""

from __future__ import annotations

import base64
import json
import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import TINY, Service, open_service, wait_for, write_corpus
from sqlalchemy import update

from app.auth import keys
from app.scorings.jobs import eta_seconds as scoring_eta
from app.store.tables import Job, Scoring, utcnow
from app.training.jobs import SORTS as job_sorts
from app.training.jobs import eta_seconds as job_eta
from app.training.queue import register_worker, worker_stopped
from model.config import PRESETS

LIMIT_SECONDS = 600.0  # the job limit of this service: a tiny job of 10,000 epochs is past it


@dataclass
class World:
    svc: Service
    alice: dict[str, str]
    bob: dict[str, str]
    reader: dict[str, str]
    admin: dict[str, str]
    tiny: dict[str, Any]  # alice's dataset named "tiny"
    twins: list[dict[str, Any]]  # two of alice's datasets named "twin"
    trained: dict[str, Any]  # a job that ran (with its ETA seen while running)
    etas: list[float]


def files_of(folder: Path) -> dict[str, tuple[str, bytes, str]]:
    return {s: (f"{s}.txt", (folder / f"{s}.txt").read_bytes(), "text/plain") for s in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("metadata")
    svc, close = open_service(tmp, auth=True, max_job_seconds=LIMIT_SECONDS)
    secrets = {
        name: keys.create_key(svc.engine, name, scope)[1]
        for name, scope in (("admin", "admin"), ("alice", "write"), ("bob", "write"), ("reader", "read"))
    }
    alice, bob, reader, admin = ({"Authorization": f"Bearer {secrets[n]}"} for n in ("alice", "bob", "reader", "admin"))
    corpus = write_corpus(tmp / "corpus")
    uploaded = []
    for name in ("tiny", "twin", "twin"):
        response = svc.client.post("/v1/datasets", files=files_of(corpus), data={"name": name}, headers=alice)
        assert response.status_code == 201, response.text
        uploaded.append(response.json())
    body = {"dataset_id": "tiny", "preset": "test", "overrides": {**TINY, "max_max_epoch": 3}, "name": "trained"}
    job = svc.client.post("/v1/jobs", json=body, headers=alice).json()
    assert job["dataset_id"] == uploaded[0]["id"], job  # the name, unique among alice's datasets
    worker = svc.start_worker("--burst")
    etas: list[float] = []

    def finished() -> bool:
        seen = svc.client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
        eta = (seen["progress"] or {}).get("eta_seconds")
        if seen["status"] == "running" and eta is not None:
            etas.append(eta)
        return seen["status"] in ("succeeded", "failed", "canceled")

    wait_for(finished, timeout=120, interval=0.02, what="the trained job")
    assert worker.wait(60) == 0, worker.log()
    trained = svc.client.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    assert trained["status"] == "succeeded", trained
    yield World(svc, alice, bob, reader, admin, uploaded[0], uploaded[1:], trained, etas)
    close()


def submit(w: World, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    full = {"dataset_id": w.tiny["id"], "preset": "test", "overrides": {**TINY, "max_max_epoch": 1}, **body}
    response = w.svc.client.post("/v1/jobs", json=full, headers=headers or w.alice)
    assert response.status_code == 201, response.text
    return response.json()


def listed(w: World, path: str = "/v1/jobs", headers: dict[str, str] | None = None, **params: Any) -> list[str]:
    """Every id the list gives, page by page (limit 2: the cursors carry the order)."""
    ids: list[str] = []
    cursor = None
    while True:
        page = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = w.svc.client.get(path, params=page, headers=headers or w.alice)
        assert response.status_code == 200, response.text
        ids += [item["id"] for item in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return ids


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def test_jobs_take_a_name_tags_and_notes_and_patch_merges_them(world: World) -> None:
    w = world
    job = submit(w, name="baseline run", tags=["ptb", "sweep:lr", "ptb", "v1.2"], notes="first try")
    assert (job["name"], job["tags"], job["notes"]) == ("baseline run", ["ptb", "sweep:lr", "v1.2"], "first try")
    path = f"/v1/jobs/{job['id']}"
    # only the fields sent change; null clears one
    patched = w.svc.client.patch(path, json={"tags": ["best", "ptb"]}, headers=w.alice).json()
    assert (patched["name"], patched["tags"], patched["notes"]) == ("baseline run", ["best", "ptb"], "first try")
    patched = w.svc.client.patch(path, json={"name": None, "notes": "n" * 10_000}, headers=w.alice).json()
    assert (patched["name"], patched["tags"], len(patched["notes"])) == (None, ["best", "ptb"], 10_000)
    assert w.svc.client.get(path, headers=w.alice).json()["tags"] == ["best", "ptb"]
    # a finished job is edited as well; its owner or an admin only, with write scope
    done = w.svc.client.patch(f"/v1/jobs/{w.trained['id']}", json={"notes": "kept"}, headers=w.admin)
    assert done.status_code == 200 and done.json()["notes"] == "kept"
    assert problem(w.svc.client.patch(path, json={"notes": "x"}, headers=w.bob), 404)["detail"]
    assert problem(w.svc.client.patch(path, json={"notes": "x"}, headers=w.reader), 403)
    # bad metadata: every failing field at once, in words
    bad = w.svc.client.patch(
        path, json={"name": "x" * 201, "tags": ["ok", "no spaces"], "notes": "n" * 10_001}, headers=w.alice
    )
    body = problem(bad, 422)
    assert [e["field"] for e in body["errors"]] == ["name", "tags.1", "notes"], body
    many = w.svc.client.patch(path, json={"tags": ["t"] * 21}, headers=w.alice)
    assert problem(many, 422)["errors"][0]["message"] == "tags must have at most 20 items, got 21"
    assert "name must be at most 200 characters, got 201" in body["detail"]
    assert problem(w.svc.client.patch(path, json={"colour": "red"}, headers=w.alice), 422)["errors"][0] == {
        "field": "colour",
        "message": "colour is not a field of this request",
        "loc": "body.colour",
        "msg": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    }


def test_job_list_filters_by_name_tags_dataset_preset_and_status(world: World) -> None:
    w = world
    a = submit(w, name="LR sweep A", tags=["sweep", "lr"])
    b = submit(w, name="lr SWEEP b", tags=["sweep"], dataset_id=w.twins[0]["id"])
    c = submit(w, name="100%_done", tags=["lr"])
    assert listed(w, q="sweep") == [b["id"], a["id"]]  # case-insensitive part of the name, newest first
    assert listed(w, q=a["id"]) == [a["id"]]  # or exactly an id
    assert listed(w, q="%_") == [c["id"]]  # LIKE's wildcards are plain characters
    assert listed(w, tag=["sweep", "lr"]) == [a["id"]]  # every tag given
    assert listed(w, tag="lr", q="sweep") == [a["id"]]
    assert set(listed(w, dataset_id=w.twins[0]["id"])) == {b["id"]}
    assert set(listed(w, dataset_id="tiny")) >= {a["id"], c["id"], w.trained["id"]}  # a unique name
    assert b["id"] not in listed(w, dataset_id="tiny")
    assert listed(w, preset="small") == []
    assert w.trained["id"] in listed(w, status="succeeded", preset="test")
    assert listed(w, q="sweep", headers=w.bob) == []  # another key's jobs stay invisible
    twins = problem(w.svc.client.get("/v1/jobs", params={"dataset_id": "twin"}, headers=w.alice), 422)
    assert sorted(twins["dataset_ids"]) == sorted(d["id"] for d in w.twins) and "2 datasets" in twins["detail"]
    assert (
        "not found"
        in problem(w.svc.client.get("/v1/jobs", params={"dataset_id": "nope"}, headers=w.alice), 404)["detail"]
    )
    # a NUL character is in no name, id or dataset name (PostgreSQL refuses it in a query): no 5xx
    assert listed(w, q="lr\x00") == []
    nul = w.svc.client.get("/v1/jobs", params={"dataset_id": "ti\x00ny"}, headers=w.alice)
    assert problem(nul, 404)["detail"] == "dataset 'ti\\x00ny' not found"
    named = w.svc.client.post("/v1/jobs", json={"dataset_id": "tiny", "name": "a\u0000b"}, headers=w.alice)
    assert "NUL" in problem(named, 422)["detail"]
    for params, phrase in (
        ({"tag": "no spaces"}, "tag must be 1-50 characters"),
        ({"preset": "huge"}, "preset must be one of"),
        ({"sort": "name"}, "sort must be one of"),
        ({"q": "x" * 201}, "q must be at most 200 characters, got 201"),
    ):
        assert phrase in problem(w.svc.client.get("/v1/jobs", params=params, headers=w.alice), 422)["detail"]


def test_job_list_sorts_by_time_and_perplexity_and_cursors_keep_their_sort(world: World) -> None:
    w = world
    made = [submit(w, tags=["sorting"])["id"] for _ in range(5)]
    # finished runs' perplexities, as workers record them; two have none yet
    values = {made[0]: (150.0, 140.0), made[1]: (120.0, None), made[2]: (150.0, 130.0)}
    with w.svc.engine.begin() as connection:
        for job_id, (valid, test) in values.items():
            connection.execute(update(Job).where(Job.id == job_id).values(best_valid_ppl=valid, test_ppl=test))
    assert listed(w, tag="sorting") == made[::-1]
    assert listed(w, tag="sorting", sort="created_at") == made
    by_valid = listed(w, tag="sorting", sort="valid_ppl")
    tied = sorted([made[0], made[2]])  # equal perplexities: by id
    assert by_valid == [made[1], *tied, *sorted(made[3:])]
    assert listed(w, tag="sorting", sort="test_ppl") == [made[2], made[0], *sorted([made[1], *made[3:]])]
    # a cursor continues its own sort only
    first = w.svc.client.get("/v1/jobs", params={"tag": "sorting", "sort": "valid_ppl", "limit": 2}, headers=w.alice)
    cursor = first.json()["next_cursor"]
    other = w.svc.client.get("/v1/jobs", params={"tag": "sorting", "cursor": cursor}, headers=w.alice)
    assert "made for sort=valid_ppl" in problem(other, 422)["detail"]
    forged = base64.urlsafe_b64encode(json.dumps({"s": "valid_ppl", "v": "x", "id": "j"}).encode()).decode()
    bad = w.svc.client.get("/v1/jobs", params={"sort": "valid_ppl", "cursor": forged}, headers=w.alice)
    assert "not valid" in problem(bad, 422)["detail"]


def test_submission_names_a_dataset_by_its_unique_name(world: World) -> None:
    w = world
    twins = problem(w.svc.client.post("/v1/jobs", json={"dataset_id": "twin", "preset": "test"}, headers=w.alice), 422)
    assert all(d["id"] in twins["detail"] for d in w.twins) and twins["field"] == "dataset_id"
    missing = w.svc.client.post("/v1/jobs", json={"dataset_id": "nope", "preset": "test"}, headers=w.alice)
    assert problem(missing, 422)["detail"] == "dataset 'nope' not found"
    # bob sees none of alice's datasets, named or not
    theirs = w.svc.client.post("/v1/jobs", json={"dataset_id": "tiny", "preset": "test"}, headers=w.bob)
    assert problem(theirs, 422)["detail"] == "dataset 'tiny' not found"


def test_estimate_answers_without_storing_and_the_job_limit_refuses_with_the_numbers(world: World) -> None:
    w = world
    before = listed(w)
    body = {"dataset_id": "tiny", "preset": "test", "overrides": {**TINY, "max_max_epoch": 1}}
    estimate = w.svc.client.post("/v1/jobs/estimate", json=body, headers=w.alice)
    assert estimate.status_code == 200, estimate.text
    found = estimate.json()
    assert found["fits"] and found["problem"] is None and found["dataset_id"] == w.tiny["id"]
    assert found["config"]["hidden_size"] == TINY["hidden_size"] and found["parameters"] > 0
    assert found["total_seconds"] >= found["epoch_seconds"] >= found["steps_per_epoch"] * found["step_seconds"] > 0
    parts = found["load_seconds"] + found["config"]["max_max_epoch"] * found["epoch_seconds"] + found["test_seconds"]
    assert math.isclose(found["total_seconds"], parts, abs_tol=0.002)  # each part rounded to 1 ms
    assert (found["device"], found["limit_seconds"]) == ("cpu", LIMIT_SECONDS)
    assert listed(w) == before  # nothing stored
    assert problem(w.svc.client.post("/v1/jobs/estimate", json=body, headers=w.reader), 403)

    long = {**body, "overrides": {**TINY, "max_max_epoch": 10_000}}
    over = w.svc.client.post("/v1/jobs/estimate", json=long, headers=w.alice).json()
    assert not over["fits"] and over["total_seconds"] > LIMIT_SECONDS
    refused = problem(w.svc.client.post("/v1/jobs", json=long, headers=w.alice), 422)
    assert refused["detail"] == over["problem"]
    assert (
        refused["detail"].startswith("estimated ") and "on this server's cpu (no worker is live)" in refused["detail"]
    )
    assert "past the 10.0 min job limit (LSTMLM_MAX_JOB_SECONDS); cap max_steps_per_epoch" in refused["detail"]
    assert refused["estimated_seconds"] > LIMIT_SECONDS and listed(w) == before
    # a wider model on any device: past the limit on a live CPU worker, within it on a live CUDA worker
    wide = {**body, "overrides": {**TINY, "hidden_size": 512, "device": "auto", "max_max_epoch": 1000}}
    worker_ids = [register_worker(w.svc.engine, capabilities=["cpu"])]
    try:
        on_cpu = w.svc.client.post("/v1/jobs/estimate", json=wide, headers=w.alice).json()
        assert not on_cpu["fits"] and (on_cpu["device"], on_cpu["basis"]) == ("cpu", "the live workers'")
        assert "on the live workers' cpu, past the 10.0 min job limit" in on_cpu["problem"]
        worker_ids.append(register_worker(w.svc.engine, capabilities=["cpu", "cuda"]))
        on_gpu = w.svc.client.post("/v1/jobs/estimate", json=wide, headers=w.alice).json()
        assert on_gpu["fits"] and (on_gpu["device"], on_gpu["basis"]) == ("cuda", "the live workers'")
    finally:
        for worker_id in worker_ids:
            worker_stopped(w.svc.engine, worker_id)


def test_an_estimate_counts_world_size_processes(world: World) -> None:
    """On a CPU the processes share its cores (no faster) and add one all-reduce of the gradients a
    step; on CUDA each has its own GPU."""
    w = world
    body = {"dataset_id": "tiny", "preset": "test", "overrides": {**TINY, "hidden_size": 512, "max_max_epoch": 1}}

    def estimate(**overrides: object) -> dict[str, Any]:
        answer = w.svc.client.post(
            "/v1/jobs/estimate", json={**body, "overrides": {**body["overrides"], **overrides}}, headers=w.alice
        )
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    one, two, four = estimate(), estimate(world_size=2), estimate(world_size=4)
    gradient_bytes = 4 * one["parameters"]
    for ranks, found in ((2, two), (4, four)):  # step_seconds is rounded to a microsecond
        allreduce = 2 * (ranks - 1) / ranks * gradient_bytes / 0.8e9
        assert allreduce > 0.01 and math.isclose(found["step_seconds"], one["step_seconds"] + allreduce, abs_tol=2e-6)
    gpu_worker = register_worker(w.svc.engine, capabilities=["cpu", "cuda"])
    try:
        big = {"device": "auto", "batch_size": 16, "hidden_size": 1500}  # the products outweigh the fixed costs
        cuda_one, cuda_two = estimate(**big), estimate(**big, world_size=2)
    finally:
        worker_stopped(w.svc.engine, gpu_worker)
    assert (cuda_one["device"], cuda_two["device"]) == ("cuda", "cuda")
    # half the products each (here the all-reduce of 36 M parameters costs more than it saves)
    shared = 2 * (2 - 1) / 2 * 4 * cuda_one["parameters"] / 50e9
    assert cuda_two["step_seconds"] - shared < cuda_one["step_seconds"] - 1e-4


def test_eta_while_running_and_the_paper_comparison(world: World) -> None:
    w = world
    assert w.etas and all(eta >= 0 for eta in w.etas) and max(w.etas) > 0  # seen while it ran
    assert w.trained["progress"]["eta_seconds"] is None  # not running
    queued = submit(w)
    assert queued["progress"] is None or queued["progress"]["eta_seconds"] is None
    assert w.trained["paper"] == {
        "test_ppl": None,
        "comparable": False,
        "reason": "the test preset is not one of the paper's (small, medium, large)",
    }
    small = submit(w, preset="small", overrides={"max_max_epoch": 1, "max_steps_per_epoch": 2})
    assert small["paper"]["test_ppl"] == 114.5 and not small["paper"]["comparable"]
    reason = small["paper"]["reason"]
    assert reason.startswith("trained on tiny, not PTB; ") and "max_max_epoch is 1, not the small preset's 13" in reason
    assert "max_steps_per_epoch caps each epoch at 2 of " in reason


def test_scorings_take_metadata_filters_and_patch(world: World) -> None:
    w = world
    client, model = w.svc.client, w.trained["id"]
    made = []
    for name, tags in (("Dev split", ["dev", "nightly"]), ("test split", ["nightly"])):
        form = {"model": model, "dataset_id": "tiny", "split": "valid", "name": name, "notes": "n"}
        response = client.post("/v1/scorings", data={**form, "tags": tags}, headers=w.alice)
        assert response.status_code == 201, response.text
        made.append(response.json())
    assert (made[0]["name"], made[0]["tags"], made[0]["notes"]) == ("Dev split", ["dev", "nightly"], "n")
    assert made[0]["dataset_id"] == w.tiny["id"] and made[0]["eta_seconds"] is None  # queued
    scorings = "/v1/scorings"
    assert listed(w, scorings, q="SPLIT") == [made[1]["id"], made[0]["id"]]
    assert listed(w, scorings, q="split", sort="created_at") == [made[0]["id"], made[1]["id"]]
    assert listed(w, scorings, tag=["nightly", "dev"]) == [made[0]["id"]]
    assert listed(w, scorings, status="queued", tag="nightly") == [made[1]["id"], made[0]["id"]]
    assert listed(w, scorings, status="succeeded", tag="nightly") == []
    patched = client.patch(f"{scorings}/{made[1]['id']}", json={"tags": ["dev"], "notes": None}, headers=w.alice)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["tags"], patched.json()["notes"]) == ("test split", ["dev"], None)
    assert listed(w, scorings, tag="dev") == [made[1]["id"], made[0]["id"]]
    assert problem(client.patch(f"{scorings}/{made[0]['id']}", json={"tags": []}, headers=w.bob), 404)
    bad = client.post(
        scorings, data={"model": model, "dataset_id": "tiny", "split": "valid", "tags": ["a b"]}, headers=w.alice
    )
    assert "tags: each tag must be 1-50 characters" in problem(bad, 422)["detail"]
    for scoring in made:
        assert client.post(f"{scorings}/{scoring['id']}/cancel", headers=w.alice).json()["status"] == "canceled"
        assert client.delete(f"{scorings}/{scoring['id']}", headers=w.alice).status_code == 204


def test_a_scorings_eta_counts_its_current_attempt_only() -> None:
    started = utcnow() - timedelta(seconds=10)
    row = Scoring(status="running", started_at=started, lines_done=300, total_lines=1300, attempt=1, sums={})
    assert scoring_eta(row) == pytest.approx(10 / 300 * 1000, rel=0.05)
    resumed = Scoring(
        status="running",
        started_at=started,
        lines_done=300,
        total_lines=1300,
        attempt=2,
        sums={"attempt_start_lines": 200},
    )
    assert scoring_eta(resumed) == pytest.approx(10 / 100 * 1000, rel=0.05)
    assert (
        scoring_eta(Scoring(status="queued", started_at=None, lines_done=0, total_lines=5, attempt=0, sums={})) is None
    )


def test_unknown_metric_keys_are_refused_with_the_known_ones(world: World) -> None:
    w = world
    response = w.svc.client.get(
        f"/v1/jobs/{w.trained['id']}/metrics", params={"key": ["valid_ppl", "nonsense"]}, headers=w.alice
    )
    body = problem(response, 422)
    assert body["detail"].startswith("unknown metric key 'nonsense'; the keys are train_ppl, valid_ppl")
    assert "wps" in body["keys"]
    good = w.svc.client.get(f"/v1/jobs/{w.trained['id']}/metrics", params={"key": "valid_ppl"}, headers=w.alice)
    assert [p["key"] for p in good.json()["metrics"]] == ["valid_ppl"] * 3


def test_the_openapi_document_states_the_list_parameters(world: World) -> None:
    document = world.svc.client.get("/openapi.json").json()
    parameters = {p["name"]: p for p in document["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert {"q", "tag", "status", "dataset_id", "preset", "sort", "limit", "cursor"} <= set(parameters)
    assert parameters["sort"]["schema"]["enum"] == list(job_sorts)  # the core's, in its order
    preset_schema = json.dumps(parameters["preset"]["schema"])
    assert all(f'"{name}"' in preset_schema for name in PRESETS)
    assert all(parameters[name].get("description") for name in ("q", "tag", "dataset_id", "preset", "sort"))
    scoring = {p["name"] for p in document["paths"]["/v1/scorings"]["get"]["parameters"]}
    assert {"q", "tag", "status", "sort"} <= scoring
    assert (
        "patch" in document["paths"]["/v1/jobs/{job_id}"] and "patch" in document["paths"]["/v1/scorings/{scoring_id}"]
    )
    assert "post" in document["paths"]["/v1/jobs/estimate"]


def test_a_jobs_eta_counts_the_steps_left_and_the_evaluation_passes() -> None:
    estimate = {"steps_per_epoch": 100, "step_seconds": 0.02, "epoch_seconds": 3.0, "test_seconds": 4.0}
    config = {"batch_size": 20, "num_steps": 2, "max_max_epoch": 2}

    def eta(status: str = "running", **progress: Any) -> float | None:
        base = {"epoch": 1, "epochs": 2, "step": 50, "steps": 100, "wps": 4000.0, "fraction": 0.5, "phase": "train"}
        return job_eta(Job(status=status, config=config, estimate=estimate, progress={**base, **progress}))

    # measured: 40 words a step at 4,000 words/s = 0.01 s, half the estimate: the passes take half too
    # (validation 1.0 s x 0.5, test 4.0 s x 0.5): 50 steps + a validation + a whole epoch + the test run
    assert eta() == pytest.approx(50 * 0.01 + 0.5 + (100 * 0.01 + 0.5) + 2.0, abs=0.05)
    assert eta(phase="validate", epoch=2, fraction=0.5) == pytest.approx(0.25 + 2.0, abs=0.05)  # to a tenth of a second
    assert eta(phase="test", epoch=2, fraction=0.25) == pytest.approx(1.5, abs=0.05)
    assert eta(status="queued") is None and eta(wps=None) is None and eta(phase="done") is None


def test_a_running_scoring_has_an_eta_and_a_stopping_worker_hands_it_back_without_an_error(world: World) -> None:
    w = world
    for queued_job in listed(w, status="queued"):  # the worker would train these first
        assert w.svc.client.post(f"/v1/jobs/{queued_job}/cancel", headers=w.alice).status_code == 200
    text = "".join(f"the cat sat on the mat {i % 7}\n" for i in range(20_000)).encode()
    form = {"model": w.trained["id"], "name": "long"}
    response = w.svc.client.post("/v1/scorings", data=form, files={"file": ("t.txt", text)}, headers=w.alice)
    assert response.status_code == 201, response.text
    path = f"/v1/scorings/{response.json()['id']}"
    worker = w.svc.start_worker()

    def scoring_with_an_eta() -> dict[str, Any] | None:
        seen: dict[str, Any] = w.svc.client.get(path, headers=w.alice).json()
        return seen if seen["status"] == "running" and seen["eta_seconds"] else None

    running = wait_for(scoring_with_an_eta, timeout=60, interval=0.02, what="a running scoring with an ETA")
    assert running["eta_seconds"] > 0 and 0 < running["lines_done"] < running["total_lines"]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()
    queued = w.svc.client.get(path, headers=w.alice).json()
    if queued["status"] == "queued":  # (a fast machine may have finished it first)
        assert queued["error"] is None and queued["eta_seconds"] is None
        assert queued["message"].startswith("handed back after line ") and "resumes at line" in queued["message"]
        assert w.svc.client.post(f"{path}/cancel", headers=w.alice).json()["status"] == "canceled"
    assert w.svc.client.delete(path, headers=w.alice).status_code == 204
