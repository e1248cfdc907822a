"""The storage interface's contract (`app.store.storage`), held by both implementations: a local
folder (`LocalStorage`) and S3 (`S3Storage`) on a real SeaweedFS server (tests/s3server.py).

Writes are published whole or not at all, reads see whole files only, keys stay inside the
storage, the local cache of S3 objects stays under its bound and follows new content, the crash
sweep removes abandoned writes and only those, and a write outlasts a short S3 outage.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from app.store.storage import PARTIAL_SUFFIX, Entry, LocalStorage, MissingObject, Storage, open_storage

BACKENDS = ("local", "s3")
MiB = 1024 * 1024


def s3_storage(tmp_path: Path, **overrides: Any) -> Any:
    """An `S3Storage` on a fresh prefix of the test process' bucket, its cache under `tmp_path`."""
    import s3server

    from app.store.s3 import S3Storage

    os.environ.update(s3server.env())  # as the harness does: the server's for the whole test process
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "storage_url": f"s3://{s3server.shared_bucket()}/{tmp_path.name}-{secrets.token_hex(4)}",
        "cache_dir": tmp_path / "cache",
        "storage_retry_seconds": 10.0,
        **overrides,
    }
    storage = open_storage(Settings(_env_file=None, **values))
    assert isinstance(storage, S3Storage)
    return storage


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """An empty storage of each kind."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    return s3_storage(tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def unwritten(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """An empty storage of each kind that the tests using it never write to (shared: S3 clients are slow to make)."""
    tmp = tmp_path_factory.mktemp(f"unwritten-{request.param}")
    return LocalStorage(tmp / "store") if request.param == "local" else s3_storage(tmp)


def objects(storage: Any) -> list[str]:
    """Every object name under an `S3Storage`'s prefix, asked of S3 directly."""
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=storage.prefix + "/")
    return [item["Key"] for item in listed.get("Contents", [])]


def uploads(storage: Any) -> list[dict[str, Any]]:
    """The multipart uploads begun and not finished under an `S3Storage`'s prefix."""
    listed = storage.client.list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix + "/")
    return list(listed.get("Uploads", []))


def leftovers(storage: Storage) -> list[Path]:
    """What an unfinished write could leave: partial files (local) or scratch folders (S3's cache)."""
    if isinstance(storage, LocalStorage):
        return [p for p in storage.root.rglob("*") if p.name.endswith(PARTIAL_SUFFIX)]
    scratch = storage.cache.root / "scratch"  # type: ignore[attr-defined]
    return list(scratch.iterdir()) if scratch.is_dir() else []


def write(storage: Storage, key: str, data: bytes) -> None:
    with storage.writing(key) as path:
        path.write_bytes(data)


def read(storage: Storage, key: str) -> bytes:
    return storage.local_path(key).read_bytes()


def test_a_file_written_is_read_back(storage: Storage) -> None:
    assert not storage.exists("notes/a.txt")
    write(storage, "notes/a.txt", b"hello\n")
    write(storage, "notes/deeper/b.bin", bytes(range(256)))

    assert storage.exists("notes/a.txt")
    assert read(storage, "notes/a.txt") == b"hello\n"
    assert read(storage, "notes/deeper/b.bin") == bytes(range(256))
    listed = storage.list("notes")
    assert [(e.key, e.size) for e in listed] == [("notes/a.txt", 6), ("notes/deeper/b.bin", 256)]
    assert all(isinstance(e, Entry) and abs(e.modified - time.time()) < 120 for e in listed)
    assert storage.children("notes") == ["a.txt", "deeper"]
    assert storage.children("notes/deeper") == ["b.bin"]
    assert storage.children("") == ["notes"]
    assert [e.key for e in storage.list("")] == ["notes/a.txt", "notes/deeper/b.bin"]
    assert storage.list("nothing") == [] and storage.children("nothing") == []
    assert storage.list("notes/a.txt") == []  # a folder's files, and a file is no folder
    assert leftovers(storage) == []


def test_a_tree_written_is_read_back(storage: Storage) -> None:
    with storage.writing_tree("datasets/d1") as folder:
        (folder / "train.txt").write_text("the cat\n")
        (folder / "tokens").mkdir()
        (folder / "tokens" / "vocab.json").write_text("{}")

    tree = storage.local_tree("datasets/d1")
    assert (tree / "train.txt").read_text() == "the cat\n"
    assert (tree / "tokens" / "vocab.json").read_text() == "{}"
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()) == [
        "tokens/vocab.json",
        "train.txt",
    ]
    assert [e.key for e in storage.list("datasets/d1")] == ["datasets/d1/tokens/vocab.json", "datasets/d1/train.txt"]
    assert storage.children("datasets/d1") == ["tokens", "train.txt"]
    assert storage.exists("datasets/d1/train.txt")
    assert read(storage, "datasets/d1/tokens/vocab.json") == b"{}"
    with pytest.raises(MissingObject):
        storage.local_tree("datasets/d2")
    assert leftovers(storage) == []


def test_a_tree_written_again_replaces_the_earlier_one(storage: Storage) -> None:
    """A tree is written once; what an earlier attempt left there (a crash before its row) goes."""
    with storage.writing_tree("datasets/d1") as folder:
        (folder / "old.txt").write_text("old")
        (folder / "kept.txt").write_text("first")
    with storage.writing_tree("datasets/d1") as folder:
        (folder / "kept.txt").write_text("second")
        (folder / "new.txt").write_text("new")

    assert [e.key for e in storage.list("datasets/d1")] == ["datasets/d1/kept.txt", "datasets/d1/new.txt"]
    tree = storage.local_tree("datasets/d1")
    assert sorted(p.name for p in tree.iterdir()) == ["kept.txt", "new.txt"]
    assert (tree / "kept.txt").read_text() == "second"


@pytest.mark.parametrize("tree", [False, True], ids=["file", "tree"])
def test_a_write_that_fails_publishes_nothing(storage: Storage, tree: bool) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        if tree:
            with storage.writing_tree("datasets/d1") as folder:
                (folder / "train.txt").write_bytes(b"x" * 1000)
                raise RuntimeError("disk on fire")
        else:
            with storage.writing("checkpoints/j1/ckpt.pt") as path:
                path.write_bytes(b"x" * 1000)
                raise RuntimeError("disk on fire")

    assert not storage.exists("checkpoints/j1/ckpt.pt")
    assert not storage.exists("datasets/d1/train.txt")
    assert storage.list("") == []
    assert leftovers(storage) == []
    with pytest.raises(MissingObject):
        storage.local_tree("datasets/d1")
    if not isinstance(storage, LocalStorage):
        assert objects(storage) == []
        assert uploads(storage) == []


def test_a_reader_never_sees_part_of_a_file(storage: Storage) -> None:
    """While a large file (a multipart upload on S3) is being published, readers find no file; then the whole."""
    data = os.urandom(17 * MiB)  # over the 8 MiB multipart threshold: three parts
    written, seen_missing = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with storage.writing("checkpoints/j1/big.pt") as path:
                path.write_bytes(data)
                written.set()
                assert seen_missing.wait(30)
        except BaseException as exc:
            errors.append(exc)
            written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert written.wait(30)
    assert not storage.exists("checkpoints/j1/big.pt")
    with pytest.raises(MissingObject):
        storage.local_path("checkpoints/j1/big.pt")
    seen_missing.set()
    while True:  # a reader polls until after the writer is done: never part of the file
        done = not thread.is_alive()
        try:
            got = storage.local_path("checkpoints/j1/big.pt").read_bytes()
        except MissingObject:
            assert not done, errors
        else:
            assert got == data, f"a reader saw {len(got)} of {len(data)} bytes"
        if done:
            break
        time.sleep(0.01)
    thread.join()
    assert errors == []
    assert read(storage, "checkpoints/j1/big.pt") == data
    size, chunks = storage.open("checkpoints/j1/big.pt")
    assert size == len(data) and b"".join(chunks) == data
    assert [(e.key, e.size) for e in storage.list("checkpoints")] == [("checkpoints/j1/big.pt", len(data))]
    if not isinstance(storage, LocalStorage):
        s3: Any = storage
        head = s3.client.head_object(Bucket=s3.bucket, Key=f"{s3.prefix}/checkpoints/j1/big.pt")
        assert head["ETag"].strip('"').endswith("-3")  # it went up as a multipart upload of three parts
        assert uploads(storage) == []


def test_open_streams_the_bytes_in_chunks(storage: Storage) -> None:
    data = os.urandom(2 * MiB + 123)
    write(storage, "scorings/s1/result.jsonl", data)

    size, chunks = storage.open("scorings/s1/result.jsonl")
    parts = list(chunks)
    assert size == len(data)
    assert len(parts) >= 3 and max(len(p) for p in parts) <= MiB
    assert b"".join(parts) == data
    with pytest.raises(MissingObject):
        storage.open("scorings/s1/none.jsonl")
    size, chunks = storage.open("scorings/s1/result.jsonl")  # a download that stops early
    first = next(chunks)
    assert first and data.startswith(first)
    chunks.close()  # type: ignore[attr-defined]


def test_exists_delete_and_delete_tree(storage: Storage, tmp_path: Path) -> None:
    for key in ("jobs/j1/a.pt", "jobs/j1/b.pt", "jobs/j1/sub/c.pt", "jobs/j10/d.pt", "other.txt"):
        write(storage, key, key.encode())

    storage.delete("jobs/j1/a.pt")
    storage.delete("jobs/j1/a.pt")  # a missing one is fine
    storage.delete("jobs/j1/never.pt")
    assert not storage.exists("jobs/j1/a.pt")
    with pytest.raises(MissingObject):
        storage.local_path("jobs/j1/a.pt")
    assert storage.exists("jobs/j1/b.pt")

    storage.delete_tree("jobs/j1")
    storage.delete_tree("jobs/j1")  # none is fine
    storage.delete_tree("nothing/here")
    assert [e.key for e in storage.list("")] == ["jobs/j10/d.pt", "other.txt"]  # j10 is not under j1
    assert not storage.exists("jobs/j1/sub/c.pt")
    # SeaweedFS still lists an emptied folder as a common prefix (S3 itself has no folders): one with files
    assert [name for name in storage.children("jobs") if storage.list(f"jobs/{name}")] == ["j10"]
    if isinstance(storage, LocalStorage):
        assert storage.children("jobs") == ["j10"]
    assert read(storage, "jobs/j10/d.pt") == b"jobs/j10/d.pt"

    outside = tmp_path / "corpus" / "train.txt"  # a file the service did not write: never deleted
    outside.parent.mkdir()
    outside.write_text("server-side corpus")
    storage.delete(str(outside))
    assert outside.read_text() == "server-side corpus"


def test_an_absolute_key_is_read_where_it_lies(storage: Storage, tmp_path: Path) -> None:
    """A row from before keys, or a server-side corpus: an absolute path, read in place."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("the cat sat\n")
    key = str(corpus / "train.txt")

    assert storage.exists(key)
    assert storage.local_path(key).read_text() == "the cat sat\n"
    size, chunks = storage.open(key)
    assert size == 12 and b"".join(chunks) == b"the cat sat\n"
    assert (storage.local_tree(str(corpus)) / "train.txt").read_text() == "the cat sat\n"
    assert not storage.exists(str(corpus / "missing.txt"))
    with pytest.raises(MissingObject):
        storage.local_path(str(corpus / "missing.txt"))


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../b.txt", "a/..", "/etc/passwd", "a\x00b", "", "a//b", "./a"])
def test_a_key_outside_the_storage_is_refused_for_writing(unwritten: Storage, key: str) -> None:
    storage = unwritten
    with pytest.raises(ValueError), storage.writing(key) as path:
        path.write_bytes(b"x")
    with pytest.raises(ValueError), storage.writing_tree(key) as folder:
        (folder / "f").write_bytes(b"x")
    assert storage.list("") == []
    assert leftovers(storage) == []


@pytest.mark.parametrize("key", ["../escape.txt", "a/../../b.txt", "a\x00b", "a//b"])
def test_a_key_outside_the_storage_is_refused_for_reading_and_deleting(unwritten: Storage, key: str) -> None:
    storage = unwritten
    for action in (
        storage.exists,
        storage.local_path,
        storage.open,
        storage.delete,
        storage.delete_tree,
        storage.local_tree,
        storage.list,
        storage.children,
    ):
        with pytest.raises(ValueError):
            action(key)


def test_a_key_written_again_after_a_delete_reads_the_new_content(storage: Storage) -> None:
    write(storage, "scorings/s1/input.txt", b"first content\n")
    assert read(storage, "scorings/s1/input.txt") == b"first content\n"  # cached on S3
    storage.delete("scorings/s1/input.txt")
    write(storage, "scorings/s1/input.txt", b"second, other content\n")
    assert read(storage, "scorings/s1/input.txt") == b"second, other content\n"

    with storage.writing_tree("datasets/d1") as folder:
        (folder / "train.txt").write_text("one")
    assert (storage.local_tree("datasets/d1") / "train.txt").read_text() == "one"
    storage.delete_tree("datasets/d1")
    with storage.writing_tree("datasets/d1") as folder:
        (folder / "train.txt").write_text("two")
    assert (storage.local_tree("datasets/d1") / "train.txt").read_text() == "two"


def test_the_cache_is_named_by_content_across_processes(tmp_path: Path) -> None:
    """Another process (a storage of its own, on the same cache folder) that rewrote a key reads its
    new content, though the cache holds a copy of the old one under the same key."""
    import s3server

    from app.store.s3 import S3Storage
    from app.store.storage import LocalCache

    first = s3_storage(tmp_path)
    write(first, "checkpoints/j1/ckpt.pt", b"old weights")
    old = first.local_path("checkpoints/j1/ckpt.pt")
    assert old.read_bytes() == b"old weights"

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", storage_retry_seconds=10.0)
    other = S3Storage(first.url, LocalCache(first.cache.root, first.cache.max_bytes), settings)
    assert other.local_path("checkpoints/j1/ckpt.pt") == old  # the same content: the same copy
    other.delete("checkpoints/j1/ckpt.pt")
    write(other, "checkpoints/j1/ckpt.pt", b"new weights, longer")
    assert other.local_path("checkpoints/j1/ckpt.pt").read_bytes() == b"new weights, longer"
    third = S3Storage(first.url, LocalCache(first.cache.root, first.cache.max_bytes), settings)
    assert third.local_path("checkpoints/j1/ckpt.pt").read_bytes() == b"new weights, longer"
    assert old.read_bytes() == b"old weights"  # a copy in use is never rewritten in place
    assert s3server.server().running()


def cache_bytes(storage: Any) -> int:
    return sum(p.stat().st_size for p in storage.cache.entries.rglob("*") if p.is_file())


def test_the_cache_stays_under_its_bound(tmp_path: Path) -> None:
    size = 256 * 1024
    bound = 3 * size + size // 2
    storage = s3_storage(tmp_path, cache_bytes=bound)
    blobs = {f"checkpoints/j1/ckpt_{i}.pt": os.urandom(size) for i in range(6)}
    for key, data in blobs.items():
        write(storage, key, data)

    paths = []
    for key, data in blobs.items():
        paths.append(storage.local_path(key))
        assert paths[-1].read_bytes() == data
        assert cache_bytes(storage) <= bound
        time.sleep(0.01)  # distinct use times
    assert [p.exists() for p in paths] == [False, False, False, True, True, True]  # least recently used out

    made = paths[3].stat()
    storage.local_path("checkpoints/j1/ckpt_3.pt")  # used again: now the newest
    used = paths[3].stat()
    # a use is an access, not a change: what is loaded from an entry is keyed by its modification time
    assert used.st_mtime_ns == made.st_mtime_ns and used.st_atime_ns > made.st_atime_ns
    time.sleep(0.01)
    assert storage.local_path("checkpoints/j1/ckpt_0.pt").read_bytes() == blobs["checkpoints/j1/ckpt_0.pt"]
    assert cache_bytes(storage) <= bound
    assert [p.exists() for p in paths] == [True, False, False, True, False, True]

    with storage.writing_tree("datasets/d1") as folder:  # a tree counts with all its files
        for i in range(2):
            (folder / f"part{i}.txt").write_bytes(os.urandom(size))
    tree = storage.local_tree("datasets/d1")
    assert sorted(p.name for p in tree.iterdir()) == ["part0.txt", "part1.txt"]
    assert cache_bytes(storage) <= bound
    assert not paths[3].exists() and paths[0].exists() and tree.exists()


def test_sweep_removes_old_partial_local_writes_only(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    write(storage, "checkpoints/j1/ckpt.pt", b"kept")
    old_file = storage.root / "checkpoints" / "j1" / f".ckpt_2.pt.abc{PARTIAL_SUFFIX}"
    old_tree = storage.root / "datasets" / f".d1.def{PARTIAL_SUFFIX}"
    young = storage.root / "checkpoints" / "j1" / f".ckpt_3.pt.ghi{PARTIAL_SUFFIX}"
    old_file.write_bytes(b"half")
    old_tree.mkdir(parents=True)
    (old_tree / "train.txt").write_text("half")
    young.write_bytes(b"being written")
    an_hour_ago = time.time() - 3600
    for path in (old_file, old_tree):
        os.utime(path, (an_hour_ago, an_hour_ago))

    removed = storage.sweep_partial(older_than=600)

    assert sorted(removed) == [
        f"checkpoints/j1/.ckpt_2.pt.abc{PARTIAL_SUFFIX}",
        f"datasets/.d1.def{PARTIAL_SUFFIX}",
    ]
    assert not old_file.exists() and not old_tree.exists() and young.exists()
    assert read(storage, "checkpoints/j1/ckpt.pt") == b"kept"


def test_sweep_aborts_old_multipart_uploads_only(tmp_path: Path) -> None:
    storage = s3_storage(tmp_path)
    neighbour = s3_storage(tmp_path / "neighbour")  # another prefix in the same bucket
    client, bucket = storage.client, storage.bucket
    write(storage, "checkpoints/j1/ckpt.pt", b"kept")

    def begin(owner: Any, key: str) -> str:
        name = f"{owner.prefix}/{key}"
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=name)["UploadId"]
        client.upload_part(Bucket=bucket, Key=name, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
        return str(upload_id)

    abandoned = begin(storage, "checkpoints/j1/ckpt_2.pt")
    elsewhere = begin(neighbour, "checkpoints/j9/ckpt_2.pt")
    time.sleep(3.0)
    young = begin(storage, "checkpoints/j1/ckpt_3.pt")
    try:
        removed = storage.sweep_partial(older_than=1.5)

        assert removed == [f"checkpoints/j1/ckpt_2.pt (multipart upload {abandoned})"]
        assert [u["UploadId"] for u in uploads(storage)] == [young]
        assert [u["UploadId"] for u in uploads(neighbour)] == [elsewhere]
        assert read(storage, "checkpoints/j1/ckpt.pt") == b"kept"
        assert not storage.exists("checkpoints/j1/ckpt_2.pt")
    finally:
        for owner, key, upload_id in (
            (storage, "checkpoints/j1/ckpt_3.pt", young),
            (neighbour, "checkpoints/j9/ckpt_2.pt", elsewhere),
        ):
            client.abort_multipart_upload(Bucket=bucket, Key=f"{owner.prefix}/{key}", UploadId=upload_id)


@pytest.fixture
def s3_restarted() -> Iterator[Any]:
    """The S3 server, started again after the test should the test leave it stopped."""
    import s3server

    server = s3server.server()
    yield server
    server.start()


def test_a_write_outlasts_a_short_s3_outage(
    tmp_path: Path, s3_restarted: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """With `storage_retry_seconds` to spare, a write waits S3's restart out, saying so in the log
    meanwhile; with a short budget it gives up soon with a `StorageError` that leaves nothing behind."""
    from app.store.storage import StorageError

    patient = s3_storage(tmp_path, storage_retry_seconds=90.0)
    hasty = s3_storage(tmp_path, storage_retry_seconds=0.2)
    write(patient, "checkpoints/j1/before.pt", b"before")
    data = os.urandom(MiB)

    restart = s3_restarted.pause(5.0)
    started = time.monotonic()
    try:
        with pytest.raises(StorageError, match="try again"):
            write(hasty, "checkpoints/j1/lost.pt", b"lost")
        with pytest.raises(StorageError):
            hasty.exists("checkpoints/j1/lost.pt")
        assert time.monotonic() - started < 5.0  # gave up while S3 was still away
        assert leftovers(hasty) == []

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="storage"):
            write(patient, "checkpoints/j1/during.pt", data)  # retries until S3 is back
    finally:
        restart.join(120)
    assert time.monotonic() - started >= 5.0
    said = [r.getMessage() for r in caplog.records if r.name == "storage"]
    assert said and all(m.startswith("object storage: attempt ") and " failed (" in m for m in said), said
    assert s3_restarted.running()
    assert read(patient, "checkpoints/j1/during.pt") == data
    assert read(patient, "checkpoints/j1/before.pt") == b"before"
    assert uploads(patient) == []
    assert not hasty.exists("checkpoints/j1/lost.pt")
    write(hasty, "checkpoints/j1/lost.pt", b"found")  # the same storage works again
    assert read(hasty, "checkpoints/j1/lost.pt") == b"found"


def test_the_harness_puts_a_tests_files_on_s3_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`TEST_STORAGE=s3`: each `make_settings` call gets a prefix of its own in the test process'
    bucket, and worker processes get the same storage through `settings_env`."""
    import subprocess
    import sys

    import s3server
    from harness import make_settings, s3_settings_overrides, settings_env, storage_backend

    monkeypatch.delenv("TEST_STORAGE", raising=False)
    assert storage_backend() == "local"
    assert make_settings(tmp_path).storage_url is None
    monkeypatch.setenv("TEST_STORAGE", "minio")
    with pytest.raises(ValueError, match="TEST_STORAGE"):
        make_settings(tmp_path)

    monkeypatch.setenv("TEST_STORAGE", "s3")
    settings = make_settings(tmp_path / "one")
    other = make_settings(tmp_path / "two")
    explicit = make_settings(tmp_path / "three", storage_url=str(tmp_path / "folder"))
    monkeypatch.delenv("TEST_STORAGE")
    asked = make_settings(tmp_path / "four", **s3_settings_overrides(tmp_path / "four"))

    bucket = s3server.shared_bucket()
    assert settings.storage_url is not None and settings.storage_url.startswith(f"s3://{bucket}/one-")
    assert other.storage_url is not None and other.storage_url.startswith(f"s3://{bucket}/two-")
    assert asked.storage_url is not None and asked.storage_url.startswith(f"s3://{bucket}/four-")
    assert settings.cache_dir == tmp_path / "one" / "cache"
    assert explicit.storage_url == str(tmp_path / "folder")
    for name, value in s3server.env().items():
        assert os.environ[name] == value

    storage = open_storage(settings)
    write(storage, "datasets/d1/train.txt", b"the cat sat\n")
    assert not open_storage(other).exists("datasets/d1/train.txt")

    env = settings_env(settings)
    assert env["LSTMLM_STORAGE_URL"] == settings.storage_url
    assert env["LSTMLM_CACHE_DIR"] == str(settings.cache_dir)
    assert {name: env[name] for name in s3server.env()} == s3server.env()
    worker = (
        "from app.settings import Settings; from app.store.storage import open_storage; s = Settings(); "
        "print(s.storage_url, s.cache_dir, open_storage(s).local_path('datasets/d1/train.txt').read_text(), end='')"
    )
    got = subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout == f"{settings.storage_url} {settings.cache_dir} the cat sat\n"
