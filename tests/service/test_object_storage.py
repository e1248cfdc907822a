"""With `LSTMLM_STORAGE_URL=s3://...` every stored file is an object: the whole life of a dataset, a
job and a scoring (upload, training in a worker process, scoring, generation, downloads, deletes)
leaves nothing in the local data folder but the SQLite database, and deleting removes the objects.
Runs against the tests' SeaweedFS server whatever `TEST_STORAGE` says."""

from __future__ import annotations

import io
import json
import os
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


def test_a_server_side_corpus_under_an_s3_prefix(tmp_path: Path) -> None:
    """`LSTMLM_CORPUS_ROOTS` may name `s3://` prefixes: registered, tokenized and scored by split
    like a local folder; a path out of the root or to nothing is refused."""
    import s3server

    os.environ.update(s3server.env())  # the credentials the corpus root is read with
    corpus = write_corpus(tmp_path / "corpus", seed=3)
    bucket = s3server.new_bucket()
    client = s3server.server().client()
    for split in ("train", "valid", "test"):
        name = f"corpora/small/ptb.{split}.txt" if split == "train" else f"corpora/small/{split}.txt"
        client.put_object(Bucket=bucket, Key=name, Body=(corpus / f"{split}.txt").read_bytes())
    service, close = open_service(tmp_path, corpus_roots={"lake": f"s3://{bucket}/corpora"})
    try:
        answer = service.client.post("/v1/datasets/builtin", json={"root": "lake", "path": "small"})
        assert answer.status_code == 201, answer.text
        dataset = answer.json()
        local = service.client.post(
            "/v1/datasets",
            files={s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")},
        ).json()
        for field in ("train_tokens", "valid_tokens", "test_tokens", "vocab_size"):
            assert dataset[field] == local[field], field  # the same text, read from the bucket
        again = service.client.post("/v1/datasets/builtin", json={"root": "lake", "path": "small/"})
        assert again.status_code == 200 and again.json()["id"] == dataset["id"]  # registered once
        for path, status in (("../elsewhere", 422), ("missing", 404)):
            refused = service.client.post("/v1/datasets/builtin", json={"root": "lake", "path": path})
            assert refused.status_code == status, refused.text
            assert bucket not in refused.text  # named as root/path, never by its location

        job = service.submit(dataset["id"], max_max_epoch=1)
        service.start_worker()
        assert service.wait_status(job["id"], TERMINAL, timeout=120)["status"] == "succeeded"
        scoring = service.client.post(
            "/v1/scorings", data={"model": job["id"], "dataset_id": dataset["id"], "split": "test"}
        )
        assert scoring.status_code == 201, scoring.text

        def scored() -> dict[str, object] | None:
            body: dict[str, object] = service.client.get(f"/v1/scorings/{scoring.json()['id']}").json()
            return body if body["status"] in TERMINAL else None

        finished = wait_for(scored, timeout=120, what="the scoring")
        lines = (corpus / "test.txt").read_text().splitlines()
        assert finished["status"] == "succeeded" and finished["total_lines"] == len(lines), finished
    finally:
        close()
