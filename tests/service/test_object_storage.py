"""With `LSTMLM_STORAGE_URL=s3://...` every stored file is an object: the whole life of a dataset, a
job and a scoring (upload, training in a worker process, scoring, generation, downloads, deletes)
leaves nothing in the local data folder but the SQLite database, and deleting removes the objects.
Runs against the tests' SeaweedFS server whatever `TEST_STORAGE` says."""

from __future__ import annotations

import io
import json
from pathlib import Path

from harness import TERMINAL, open_service, s3_settings_overrides, wait_for, write_corpus

from app.store.storage import open_storage
from model.checkpoint import load


def test_nothing_but_the_database_is_kept_locally_with_s3_storage(tmp_path: Path) -> None:
    overrides = s3_settings_overrides(tmp_path)
    service, close = open_service(tmp_path, scoring_chunk_lines=7, **overrides)
    storage = open_storage(service.settings)
    try:
        dataset = service.upload(write_corpus(tmp_path / "corpus"))
        job = service.submit(dataset["id"], max_max_epoch=1)
        service.start_worker()
        done = service.wait_status(job["id"], TERMINAL, timeout=120)
        assert done["status"] == "succeeded", done

        text = "the cat sat on the mat\n" * 20
        scoring = service.client.post(
            "/v1/scorings", data={"model": job["id"]}, files={"file": ("in.txt", io.BytesIO(text.encode()))}
        ).json()

        def scored() -> dict[str, object] | None:
            body: dict[str, object] = service.client.get(f"/v1/scorings/{scoring['id']}").json()
            return body if body["status"] in TERMINAL else None

        finished = wait_for(scored, timeout=120, what="the scoring")
        assert finished["status"] == "succeeded", finished
        results = service.client.get(f"/v1/scorings/{scoring['id']}/results")
        assert results.status_code == 200
        lines = [json.loads(line) for line in results.text.splitlines()]
        assert [line["line"] for line in lines] == list(range(1, 21))  # three parts, in order
        assert int(results.headers["content-length"]) == len(results.content)

        score = service.client.post("/v1/score", json={"model": job["id"], "sentences": ["the cat sat"]})
        assert score.status_code == 200, score.text
        checkpoints = service.client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["items"]
        downloaded = service.client.get(f"/v1/jobs/{job['id']}/checkpoints/{checkpoints[-1]['id']}/file")
        assert downloaded.status_code == 200
        (tmp_path / "downloaded.pt").write_bytes(downloaded.content)
        assert load(tmp_path / "downloaded.pt")["format"]  # a whole checkpoint

        keys = [entry.key for entry in storage.list("")]
        assert any(k.startswith(f"datasets/{dataset['id']}/tokens/") for k in keys)
        assert any(k.startswith(f"checkpoints/{job['id']}/") and k.endswith(".pt") for k in keys)
        assert any(k.startswith(f"scorings/{scoring['id']}/results/") for k in keys)
        local = sorted(str(p.relative_to(service.settings.data_dir)) for p in service.settings.data_dir.rglob("*"))
        assert [name for name in local if not name.startswith("service.db")] == []

        for path in (f"/v1/scorings/{scoring['id']}", f"/v1/jobs/{job['id']}", f"/v1/datasets/{dataset['id']}"):
            assert service.client.delete(path).status_code == 204, path
        assert storage.list("") == []  # every object went with its row
    finally:
        close()
