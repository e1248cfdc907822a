"""Model names are resolved from the database on every request, in every API process: what one
process (or a worker) changes, another serves from its very next request. Two apps on one database
stand for two API processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.principal import LOCAL
from app.errors import NotFound
from app.inference import registry
from app.inference.registry import Resolver
from app.main import create_app
from app.store.db import session_factory, write_session
from app.store.tables import Checkpoint

from .conftest import InferenceService, problem


@pytest.fixture
def other(inference_service: InferenceService) -> Iterator[TestClient]:
    """A second API process: another app on the same database and data folder."""
    with TestClient(create_app(inference_service.settings)) as client:
        # Its start sweeps expired leases in a write transaction; let that end first (on SQLite an
        # alias change that began reading would be refused while it holds the write lock).
        time.sleep(0.5)
        with write_session(inference_service.engine):
            pass
        yield client


def checkpoint_of(client: TestClient, model: str) -> str:
    response = client.post("/v1/score", json={"model": model, "sentences": ["the cat sat"]})
    assert response.status_code == 200, response.text
    checkpoint_id: str = response.json()["checkpoint_id"]
    return checkpoint_id


def test_an_alias_moved_or_deleted_by_one_process_is_seen_by_the_next_request_of_another(
    inference_service: InferenceService, other: TestClient
) -> None:
    here, run = inference_service.client, inference_service.run
    job_id, (first, second) = inference_service.add_job("succeeded", [(run.files[0], 1, 50.0), (run.files[1], 2, 60.0)])
    assert here.put("/v1/models/aliases/moving", json={"target": first}).status_code == 200
    assert checkpoint_of(other, "moving") == first
    assert here.put("/v1/models/aliases/moving", json={"target": second}).status_code == 200
    assert checkpoint_of(other, "moving") == second  # no request in between
    assert here.put("/v1/models/aliases/moving", json={"target": job_id}).status_code == 200
    assert checkpoint_of(other, "moving") == first  # the job's best
    assert here.delete("/v1/models/aliases/moving").status_code == 204
    problem(other.post("/v1/score", json={"model": "moving", "sentences": ["the cat"]}), 404)


def test_a_checkpoint_recorded_by_a_worker_is_served_by_the_next_request(
    inference_service: InferenceService, other: TestClient
) -> None:
    run = inference_service.run
    job_id, (only,) = inference_service.add_job("running", [(run.files[0], 1, 60.0)])
    _, (stored,) = inference_service.add_job("succeeded", [(run.files[1], 2, 40.0)])  # a file in storage
    assert checkpoint_of(other, job_id) == only
    better = f"ckpt_b{only[5:]}"
    with Session(inference_service.engine) as session:  # as a worker records a better validated epoch
        source = session.get(Checkpoint, stored)
        assert source is not None
        session.add(
            Checkpoint(
                id=better,
                job_id=job_id,
                epoch=2,
                step=200,
                kind="epoch",
                valid_ppl=40.0,
                path=source.path,
                size_bytes=source.size_bytes,
                attempt=1,
                created_at=datetime.now(UTC) + timedelta(seconds=5),
            )
        )
        session.commit()
    assert checkpoint_of(other, job_id) == better


def test_a_job_deleted_by_one_process_is_gone_for_the_next_request_of_another(
    inference_service: InferenceService, other: TestClient
) -> None:
    run = inference_service.run
    job_id, (only,) = inference_service.add_job("succeeded", [(run.files[0], 1, 50.0)])
    assert checkpoint_of(other, job_id) == only
    assert checkpoint_of(other, only) == only
    assert inference_service.client.delete(f"/v1/jobs/{job_id}").status_code == 204
    for name in (job_id, only):
        problem(other.post("/v1/score", json={"model": name, "sentences": ["the cat"]}), 404)


def test_concurrent_requests_share_resolution_rounds_and_each_reads_after_it_arrived(
    inference_service: InferenceService,
) -> None:
    """`Resolver`: the names of concurrent requests are looked up together (one worker thread and
    session a round, not one a request), each name's error goes to its own requests only, and a
    request that arrives during a round waits for the next one, so it sees what was committed
    before it arrived."""
    run, engine = inference_service.run, inference_service.engine
    job_id, (first, second) = inference_service.add_job("succeeded", [(run.files[0], 1, 50.0), (run.files[1], 2, 60.0)])
    registry.set_alias(engine, "rounds", first)
    resolver = Resolver(session_factory(engine))

    async def scenario() -> None:
        names = [job_id] * 20 + ["rounds"] * 10 + ["no-such-model"] * 3
        answers = await asyncio.gather(*(resolver.resolve(n, LOCAL) for n in names), return_exceptions=True)
        assert [getattr(a, "checkpoint_id", None) for a in answers[:30]] == [first] * 30
        assert all(isinstance(a, NotFound) for a in answers[30:])
        assert resolver.rounds == 1  # 33 requests, one round

        early = asyncio.create_task(resolver.resolve("rounds", LOCAL))
        await asyncio.sleep(0)  # `early` queued its name and started the rounds' task
        await asyncio.sleep(0)  # that task took `early`'s round to a worker thread
        registry.set_alias(engine, "rounds", second)  # committed after `early` arrived, before `late`
        late = await resolver.resolve("rounds", LOCAL)
        assert late.checkpoint_id == second
        assert (await early).checkpoint_id in (first, second)
        assert resolver.rounds == 3  # `late` did not join `early`'s round

    asyncio.run(scenario())
