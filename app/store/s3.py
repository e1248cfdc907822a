"""S3-compatible object storage (AWS S3, MinIO, SeaweedFS, ...) for `app.store.storage`.

The client is boto3: it speaks the whole S3 API the service needs (multipart uploads streamed from
disk with `upload_file`, listing and aborting abandoned multipart uploads for the crash sweep, ranged
parallel downloads) and retries with backoff on its own. The endpoint and credentials come from the
standard variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`),
as every AWS tool reads them; with an endpoint of its own, the bucket is addressed by path (what
MinIO and SeaweedFS expect).

An object appears whole: a single PUT or the completion of a multipart upload. Reads go through a
bounded local cache (`LocalCache`) named by the object's ETag, so a worker reads a corpus from S3
once per content, and a checkpoint is fetched once per process.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from app.settings import Settings
from app.store.storage import (
    CHUNK,
    Entry,
    LocalCache,
    LocalStorage,
    MissingObject,
    Storage,
    StorageError,
    check_key,
    join,
)

log = logging.getLogger("storage")

MULTIPART_BYTES = 8 * 1024 * 1024  # files past this go up in parts of this size, a few at a time
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def _failed(what: str, exc: BaseException) -> StorageError:
    """The error a caller sees (the operation, not the endpoint); the cause goes to the log."""
    log.warning("object storage: %s failed: %s", what, exc)
    return StorageError(f"object storage did not answer ({what} failed); try again shortly")


def _retries(seconds: float) -> int:
    """Attempts that span about `seconds` of botocore's standard backoff: before retry i (from 1) it
    waits a random part of min(0.05 s x 2^(i-1), 20 s) on an error that is not throttling (a refused
    connection, a 5xx), half of that on average."""
    waited, attempts = 0.0, 1
    while waited < seconds and attempts < 100:
        waited += min(0.05 * 2.0 ** (attempts - 1), 20.0) / 2
        attempts += 1
    return attempts


def _log_failed_attempt(attempts: int, response: Any = None, caught_exception: Any = None, **_: Any) -> None:
    """Says in the log that storage is failing while botocore retries (it would otherwise be silent
    until the retries are spent); botocore decides whether and when to retry."""
    status = response[0].status_code if response is not None else None
    if caught_exception is not None or (status is not None and status >= 500):
        why = caught_exception if caught_exception is not None else f"HTTP {status}"
        log.warning("object storage: attempt %d failed (%s)", attempts, why)


class S3Storage(Storage):
    def __init__(self, url: str, cache: LocalCache, settings: Settings) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"LSTMLM_STORAGE_URL: no bucket in {url!r}")
        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.cache = cache
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            retries={"mode": "standard", "max_attempts": _retries(settings.storage_retry_seconds)},
            connect_timeout=5,
            read_timeout=60,
            s3={"addressing_style": "path" if endpoint else "auto"},
            max_pool_connections=32,
        )
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=endpoint, config=config)
        self.client.meta.events.register("needs-retry.s3", _log_failed_attempt)
        # readiness asks once and briefly: a probe that waited out the retries would hang /readyz
        probe = config.merge(Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=2))
        self.probe = session.client("s3", endpoint_url=endpoint, config=probe)
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, max_concurrency=4
        )
        self._known: dict[str, Path] = {}  # key -> its cached copy (keys are written once)
        self._lock = threading.Lock()
        self._in_place = LocalStorage(cache.root)  # absolute keys: files read where they lie

    kind = "object storage"

    def check(self) -> None:
        self._call("bucket check", self.probe.head_bucket)

    def create(self) -> None:
        try:
            self._call("bucket check", self.client.head_bucket)
        except MissingObject:
            region = self.client.meta.region_name
            where = {"LocationConstraint": region} if region not in (None, "us-east-1") else None
            kwargs = {"CreateBucketConfiguration": where} if where else {}
            self._call("bucket creation", self.client.create_bucket, **kwargs)

    # --- names ---

    def _name(self, key: str) -> str:
        return join(self.prefix, check_key(key))

    def _key(self, name: str) -> str:
        return name[len(self.prefix) + 1 :] if self.prefix else name

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING_CODES:
                raise MissingObject(f"no object {what}") from None
            raise _failed(f"{what}: {code}", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:  # unreachable, timed out, ...
            raise _failed(what, exc) from exc

    # --- writes ---

    def _upload(self, path: Path, key: str) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, self._name(key), Config=self.transfer)
        except Exception as exc:  # boto3's S3UploadFailedError wraps the client's errors
            raise _failed(f"upload of {key}", exc) from exc

    @contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        check_key(key)
        scratch = self.cache.scratch()
        try:
            path = scratch / Path(key).name
            yield path
            self._upload(path, key)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    @contextmanager
    def writing_tree(self, prefix: str) -> Iterator[Path]:
        check_key(prefix)
        scratch = self.cache.scratch()
        try:
            yield scratch
            earlier = {key for key, _, _ in self._list_raw(prefix)}
            written = set()
            for path in sorted(p for p in scratch.rglob("*") if p.is_file()):
                written.add(join(prefix, path.relative_to(scratch).as_posix()))
                self._upload(path, join(prefix, path.relative_to(scratch).as_posix()))
            for key in sorted(earlier - written):  # a tree is written once: an earlier leftover goes
                self.delete(key)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # --- reads ---

    def _etag(self, key: str) -> tuple[str, int]:
        head = self._call(key, self.client.head_object, Key=self._name(key))
        return str(head["ETag"]).strip('"'), int(head["ContentLength"])

    def _download(self, key: str, into: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._name(key), str(into), Config=self.transfer)
        except botocore.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in MISSING_CODES:
                raise MissingObject(f"no object {key}") from None
            raise _failed(f"download of {key}", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _failed(f"download of {key}", exc) from exc

    @staticmethod
    def _entry_name(*parts: str) -> str:
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]

    def local_path(self, key: str) -> Path:
        if os.path.isabs(key):
            return self._in_place.local_path(key)
        with self._lock:
            known = self._known.get(key)
        if known is not None and self.cache.get(known.name) is not None:
            return known
        etag, _ = self._etag(key)
        name = self._entry_name(self.bucket, etag, key)
        path = self.cache.get(name)
        if path is None:
            scratch = self.cache.scratch()
            try:
                self._download(key, scratch / "object")
                path = self.cache.put(name, scratch / "object")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        with self._lock:
            self._known[key] = path
        return path

    def local_tree(self, prefix: str) -> Path:
        if os.path.isabs(prefix):
            return self._in_place.local_tree(prefix)
        entries = self._list_raw(prefix)
        if not entries:
            raise MissingObject(f"no objects under {prefix}")
        name = self._entry_name(self.bucket, prefix, *(f"{key}={etag}" for key, etag, _ in entries))
        path = self.cache.get(name)
        if path is not None:
            return path
        scratch = self.cache.scratch()
        try:
            tree = scratch / "tree"
            for key, _, _ in entries:
                target = tree / key[len(prefix) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                self._download(key, target)
            return self.cache.put(name, tree)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def open(self, key: str) -> tuple[int, Iterator[bytes]]:
        if os.path.isabs(key):
            return self._in_place.open(key)
        got = self._call(key, self.client.get_object, Key=self._name(key))
        body = got["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return int(got["ContentLength"]), chunks()

    def _pages(self, what: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise _failed(f"listing {what}", exc) from exc

    def _list_raw(self, prefix: str) -> builtins.list[tuple[str, str, dict[str, Any]]]:
        """(key, etag, listing row) of every object under the folder `prefix`."""
        under = join(self.prefix, check_key(prefix)) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        rows = []
        for page in self._pages(prefix or "/", Prefix=under):
            for item in page.get("Contents", []):
                rows.append((self._key(item["Key"]), str(item["ETag"]).strip('"'), item))
        return sorted(rows, key=lambda row: row[0])

    def list(self, prefix: str) -> builtins.list[Entry]:
        return [
            Entry(key, int(item["Size"]), item["LastModified"].timestamp()) for key, _, item in self._list_raw(prefix)
        ]

    def children(self, prefix: str) -> builtins.list[str]:
        under = join(self.prefix, check_key(prefix)) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        names: set[str] = set()
        for page in self._pages(prefix or "/", Prefix=under, Delimiter="/"):
            names.update(item["Key"][len(under) :] for item in page.get("Contents", []))
            names.update(p["Prefix"][len(under) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(n for n in names if n)

    def exists(self, key: str) -> bool:
        if os.path.isabs(key):
            return self._in_place.exists(key)
        try:
            self._etag(key)
        except MissingObject:
            return False
        return True

    # --- deletes ---

    def delete(self, key: str) -> None:
        if os.path.isabs(key):
            return
        self._call(key, self.client.delete_object, Key=self._name(key))
        with self._lock:
            self._known.pop(key, None)

    def delete_tree(self, prefix: str) -> None:
        keys = [self._name(key) for key, _, _ in self._list_raw(check_key(prefix))]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self._call(prefix, self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})
        with self._lock:
            for key in [k for k in self._known if k.startswith(prefix.rstrip("/") + "/")]:
                del self._known[key]

    def sweep_partial(self, older_than: float) -> builtins.list[str]:
        """Abort multipart uploads begun over `older_than` seconds ago (their process died)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        under = self.prefix + "/" if self.prefix else ""
        removed = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=under):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed.append(f"{self._key(upload['Key'])} (multipart upload {upload['UploadId']})")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise _failed("listing multipart uploads", exc) from exc
        return removed
