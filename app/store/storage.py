"""Where files live: datasets, checkpoints and scoring inputs and results, behind one small interface.

`LSTMLM_STORAGE_URL` picks the place: a local folder (the default, `<data_dir>`) or an S3-compatible
bucket, `s3://bucket/prefix` (`app.store.s3`). Everything else names files by *key*, a relative
path such as `checkpoints/job_1/ckpt_2.pt`, and asks this interface for what it needs:

- `writing(key)` / `writing_tree(prefix)`: a local path or folder to write; what is written is
  published whole when the block ends without an error and thrown away otherwise, so a reader never
  sees part of a file (a rename on a local disk, a single or multipart upload on S3);
- `local_path(key)` / `local_tree(prefix)`: a local file or folder holding the bytes (the stored
  file itself on a local disk; a copy in the bounded local cache from S3);
- `open(key)`: the size and the bytes in chunks, for a download that streams;
- `list`, `children`, `exists`, `delete`, `delete_tree`, and `sweep_partial` for what a crash left.

Keys are relative paths with no `..`. A key that is an absolute path is a file the service did not
write into its storage (a row from before keys, or a server-side corpus): it is read where it lies
and never deleted.
"""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.errors import Busy
from app.settings import Settings
from model.checkpoint import fsync_dir

CHUNK = 1024 * 1024  # bytes a download reads and sends at a time
STORAGE_RETRY_AFTER = 10  # seconds a request refused for unreachable storage is told to wait
PARTIAL_SUFFIX = ".partial"  # something being written: `.<name>.<random>.partial`


class StorageError(Busy):
    """Storage did not do what was asked (unreachable, refused): the caller may try again later (a
    request gets 503 with Retry-After; a job's attempt is retried from its last checkpoint)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=STORAGE_RETRY_AFTER)


class MissingObject(StorageError):
    """No file or object under this key."""


@dataclass(frozen=True)
class Entry:
    """A stored file: its key, size in bytes and last change (seconds since the epoch)."""

    key: str
    size: int
    modified: float


def check_key(key: str) -> str:
    """`key` when it is a usable relative key; `ValueError` otherwise."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\x00" in key or key != path.as_posix():
        raise ValueError(f"not a storage key: {key!r}")
    return key


def join(*parts: str) -> str:
    """A key from its parts: `join("checkpoints", job_id, "x.pt")`."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


class Storage(ABC):
    """A place for files, named by keys. Implementations: `LocalStorage`, `app.store.s3.S3Storage`."""

    url: str  # what it is, for logs ("/srv/data", "s3://bucket/prefix")
    kind: str  # "local folder" or "object storage", for readiness

    @abstractmethod
    def check(self) -> None:
        """`StorageError` unless the storage answers now (for readiness)."""

    @abstractmethod
    def create(self) -> None:
        """Create the folder or bucket when it does not exist yet."""

    @abstractmethod
    @contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        """A local path to write `key`'s bytes to, published whole when the block ends."""

    @abstractmethod
    @contextmanager
    def writing_tree(self, prefix: str) -> Iterator[Path]:
        """A local folder to fill; every file in it is published under `prefix` when the block ends."""

    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A local file holding `key`'s bytes; `MissingObject` when there is none."""

    @abstractmethod
    def local_tree(self, prefix: str) -> Path:
        """A local folder holding every file under `prefix`; `MissingObject` when there is none."""

    @abstractmethod
    def open(self, key: str) -> tuple[int, Iterator[bytes]]:
        """`key`'s size and its bytes in chunks; `MissingObject` when there is none."""

    @abstractmethod
    def list(self, prefix: str) -> builtins.list[Entry]:
        """Every file under `prefix` (a folder), in key order."""

    @abstractmethod
    def children(self, prefix: str) -> builtins.list[str]:
        """The names directly under `prefix`: files and folders alike."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a file is stored under `key`."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one file; a missing one is fine. A key outside the storage is left alone."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> None:
        """Remove every file under `prefix`; none is fine."""

    @abstractmethod
    def sweep_partial(self, older_than: float) -> builtins.list[str]:
        """Remove writes that never finished and started over `older_than` seconds ago (a crashed
        process' partial files or multipart uploads); returns what was removed."""


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


class LocalStorage(Storage):
    """Files in a local (or shared) folder: a write goes to `.<name>.<random>.partial` next to its
    place and is renamed there, so it appears whole or not at all."""

    kind = "local folder"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = str(self.root)

    def check(self) -> None:
        if not os.access(self.root if self.root.exists() else self.root.parent, os.W_OK):
            raise StorageError("the storage folder is not writable")

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where `key` lies; an absolute key is its own path."""
        if os.path.isabs(key):
            return Path(key)
        return self.root / check_key(key)

    def _partial(self, key: str) -> Path:
        final = self.path(check_key(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{final.name}.{os.urandom(6).hex()}{PARTIAL_SUFFIX}")

    @contextmanager
    def writing(self, key: str) -> Iterator[Path]:
        partial = self._partial(key)
        try:
            yield partial
            fsync_file(partial)
            os.replace(partial, self.path(key))
            fsync_dir(partial.parent)
        finally:
            _discard(partial)

    @contextmanager
    def writing_tree(self, prefix: str) -> Iterator[Path]:
        partial = self._partial(prefix)
        partial.mkdir()
        try:
            yield partial
            final = self.path(prefix)
            if final.exists():  # a tree is written once; an earlier leftover without a row goes
                shutil.rmtree(final)
            os.replace(partial, final)  # the folder appears whole or not at all
            fsync_dir(final.parent)
        finally:
            _discard(partial)

    def local_path(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise MissingObject(f"no file {key}")
        return path

    def local_tree(self, prefix: str) -> Path:
        path = self.path(prefix)
        if not path.is_dir():
            raise MissingObject(f"no folder {prefix}")
        return path

    def open(self, key: str) -> tuple[int, Iterator[bytes]]:
        path = self.local_path(key)
        f = path.open("rb")
        size = os.fstat(f.fileno()).st_size

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return size, chunks()

    def list(self, prefix: str) -> builtins.list[Entry]:
        base = self.path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        entries = []
        for path in base.rglob("*"):
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile
                continue
            if path.is_file():
                entries.append(Entry(path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime))
        return sorted(entries, key=lambda e: e.key)

    def children(self, prefix: str) -> builtins.list[str]:
        base = self.path(prefix) if prefix else self.root
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def _own(self, key: str) -> Path | None:
        """The path of a key this storage wrote (inside the root, never the root itself)."""
        path = self.path(key).resolve()
        return path if path.is_relative_to(self.root) and path != self.root else None

    def delete(self, key: str) -> None:
        path = self._own(key)
        if path is not None and not path.is_dir():
            path.unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        path = self._own(prefix)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def sweep_partial(self, older_than: float) -> builtins.list[str]:
        cutoff = time.time() - older_than
        removed = []
        for path in sorted(self.root.rglob(f".*{PARTIAL_SUFFIX}")):
            try:
                if path.lstat().st_mtime < cutoff:
                    _discard(path)
                    removed.append(path.relative_to(self.root).as_posix())
            except OSError:
                continue
        return removed


def mark_used(path: Path, mtime_ns: int) -> None:
    """Record a use of a local copy: its access time moves to now, its modification time stays
    `mtime_ns` (the read cache evicts by access time; readers key on the modification time)."""
    os.utime(path, ns=(time.time_ns(), mtime_ns))


class LocalCache:
    """Bounded local copies of stored files (S3 objects), named by content (the object's ETag).

    An entry is a file or a folder (a tree) under `<root>/entries/`; each use sets its access time
    (its modification time stays that of its making, so a reader can tell a remade entry from a used
    one), and past `max_bytes` the least recently used entries go (never the one just made). Entries
    appear by a rename, whole.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.entries = root / "entries"
        self.entries.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def scratch(self) -> Path:
        """A fresh local folder for files on their way to storage (removed by the caller)."""
        folder = self.root / "scratch"
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=folder, suffix=PARTIAL_SUFFIX))

    def sweep_scratch(self, older_than: float) -> builtins.list[str]:
        """Remove scratch folders left over `older_than` seconds ago (their process died)."""
        folder = self.root / "scratch"
        cutoff = time.time() - older_than
        removed = []
        for path in sorted(folder.glob(f"*{PARTIAL_SUFFIX}")) if folder.is_dir() else []:
            try:
                if path.lstat().st_mtime < cutoff:
                    _discard(path)
                    removed.append(str(path))
            except OSError:
                continue
        return removed

    def get(self, name: str) -> Path | None:
        path = self.entries / name
        try:
            mark_used(path, path.stat().st_mtime_ns)
        except OSError:
            return None
        return path

    def put(self, name: str, made: Path) -> Path:
        """Move `made` (a file or folder) in as entry `name`; returns its path."""
        path = self.entries / name
        try:
            os.replace(made, path)
        except OSError:  # another process made the same entry (a folder is not replaced)
            _discard(made)
        self.evict(keep=path)
        return path

    def evict(self, keep: Path) -> None:
        with self._lock:
            sized = []
            for entry in self.entries.iterdir():
                try:
                    files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
                    sized.append((entry.stat().st_atime, sum(f.stat().st_size for f in files), entry))
                except OSError:
                    continue
            total = sum(size for _, size, _ in sized)
            for _, size, entry in sorted(sized):
                if total <= self.max_bytes:
                    break
                if entry != keep:
                    _discard(entry)
                    total -= size


def is_object_url(location: str) -> bool:
    """Whether `location` names object storage (`s3://bucket/prefix`) rather than a local folder."""
    return location.startswith("s3://")


def open_storage(settings: Settings, url: str | None = None) -> Storage:
    """The storage `settings` name, or the one at `url` (a corpus root); one per URL and process, so
    that S3 clients and the cache are shared."""
    url = url or settings.storage_url or str(settings.data_dir)
    key = (url, str(settings.resolved_cache_dir), settings.cache_bytes, settings.storage_retry_seconds)
    with _opened_lock:
        storage = _opened.get(key)
        if storage is None:
            if is_object_url(url):
                from app.store.s3 import S3Storage  # boto3 is imported only where S3 is used

                storage = S3Storage(url, LocalCache(settings.resolved_cache_dir, settings.cache_bytes), settings)
            elif "://" in url:
                raise ValueError(f"LSTMLM_STORAGE_URL must be a folder or s3://bucket/prefix, got {url!r}")
            else:
                storage = LocalStorage(Path(url))
            _opened[key] = storage
        return storage


_opened: dict[tuple[str, str, int, float], Storage] = {}
_opened_lock = threading.Lock()
