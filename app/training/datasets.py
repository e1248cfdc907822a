"""Corpora: uploaded train/valid/test text, or server-side folders exposed by name.

An upload is checked (UTF-8, words in every split, the size limit), written under
`<datasets_dir>/<id>/{train,valid,test}.txt` and recorded with its token counts and vocabulary
size. A server-side folder is named by a root from `settings.corpus_roots` and an optional relative
path inside it; any path that resolves outside the root (`..`, absolute paths, symlinks) is refused.
Reads take a `Session`; writes take the `Engine`. Functions that take a `viewer` apply the
ownership rules of `app.auth.ownership` (None: no restriction, for internal callers).

A dataset is deleted with its files; while finished jobs still name it, its row stays, marked
deleted and hidden, so those jobs keep their history. Server-side corpora are never touched on disk.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session

from app.auth import ownership, quotas
from app.auth.principal import LOCAL, Principal
from app.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from app.inference.conventions import CONVENTIONS, detect
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import keyset_page
from app.store.tables import Dataset, Job, new_id, utcnow
from model.checkpoint import fsync_dir
from model.data import SPLITS, Corpus, CorpusError, Vocabulary, tokenize_text

UPLOAD = "upload"
BUILTIN = ownership.BUILTIN_SOURCE
BUSY = ("queued", "running", "canceling")  # job states that still read their dataset
STAGING_PREFIX, STAGING_SUFFIX = ".ds_", ".partial"  # an upload being written: `.ds_<id>.partial`
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CorpusStats:
    train_tokens: int
    valid_tokens: int
    test_tokens: int
    vocab_size: int  # types of the training split, counting <eos> and <unk>
    convention: str  # how the text is tokenized: given, or detected from the training text

    def row(
        self, dataset_id: str, name: str, source: str, folder: Path, size_bytes: int, owner_id: str | None
    ) -> Dataset:
        """The dataset row for a corpus with these numbers."""
        return Dataset(
            owner_id=owner_id,
            id=dataset_id,
            name=name,
            source=source,
            path=str(folder),
            train_tokens=self.train_tokens,
            valid_tokens=self.valid_tokens,
            test_tokens=self.test_tokens,
            vocab_size=self.vocab_size,
            size_bytes=size_bytes,
            convention=self.convention,
        )


def decode_split(split: str, raw: bytes) -> str:
    """The text of one split; `Invalid` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{split}: not UTF-8 text (invalid byte at offset {exc.start})", field=split) from None


def check_convention(convention: str | None) -> None:
    """`Invalid` unless `convention` names one (None: detect it)."""
    if convention is not None and convention not in CONVENTIONS:
        raise Invalid(
            f"convention: {convention!r} is not one of {', '.join(CONVENTIONS)} (or leave it out to detect it)",
            field="convention",
        )


def corpus_stats(texts: dict[str, str], convention: str | None = None) -> CorpusStats:
    """Token counts (with `<eos>` per line, as training reads them), the vocabulary size and the text
    convention (`convention`, or detected from the training text when None)."""
    counts: dict[str, int] = {}
    train_tokens: list[str] = []
    for split in SPLITS:
        try:
            tokens = tokenize_text(texts[split], split)
        except CorpusError as exc:
            raise Invalid(str(exc), field=split) from None
        counts[split] = len(tokens)
        if split == "train":
            train_tokens = tokens
    vocab = Vocabulary.build(train_tokens)
    found = convention or detect(train_tokens)
    return CorpusStats(counts["train"], counts["valid"], counts["test"], len(vocab), found)


def folder_stats(folder: str, convention: str | None = None) -> CorpusStats:
    """The numbers of a corpus folder holding train.txt, valid.txt and test.txt (`Invalid` for bad text)."""
    texts = {split: decode_split(split, (Path(folder) / f"{split}.txt").read_bytes()) for split in SPLITS}
    return corpus_stats(texts, convention)


def parse_in_child(folder: Path, convention: str | None = None) -> CorpusStats:
    """`folder_stats` in a child process: a large corpus (millions of words) is decoded, split and
    counted there, so its seconds of CPU and its memory never hold up the API's own process."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(folder_stats, str(folder), convention).result()


def store_capped(source: BinaryIO, path: Path, limit: int, what: str, already: int = 0) -> int:
    """Copy `source` to `path` in chunks, synced to disk; returns its size. `TooLarge` (naming `what`)
    as soon as `already` plus the bytes copied would pass `limit`: nothing past it is written."""
    with path.open("wb") as out:
        while chunk := source.read(COPY_CHUNK):
            if already + out.tell() + len(chunk) > limit:
                raise TooLarge(
                    f"{what} has more than {limit:,} bytes; this server accepts at most {limit:,}", limit=limit
                )
            out.write(chunk)
        size = out.tell()
        out.flush()
        os.fsync(out.fileno())
    return size


def create_upload(
    engine: Engine,
    settings: Settings,
    name: str | None,
    files: dict[str, BinaryIO],
    owner: Principal = LOCAL,
    convention: str | None = None,
) -> Dataset:
    """Validate and store an uploaded train/valid/test triple; nothing is left when it is refused.

    Each file is streamed to a staging folder, never read whole into memory; the staged text is
    parsed in this thread when small, in a child process from `upload_parse_process_bytes` on.
    """
    check_convention(convention)
    dataset_id = new_id("ds")
    folder = (settings.datasets_dir / dataset_id).resolve()
    staging = folder.with_name(f"{STAGING_PREFIX}{dataset_id}{STAGING_SUFFIX}")
    staging.mkdir(parents=True)
    try:
        total = 0
        for split in SPLITS:
            total += store_capped(
                files[split], staging / f"{split}.txt", settings.max_upload_bytes, "the upload", total
            )
        large = total >= settings.upload_parse_process_bytes
        stats = parse_in_child(staging, convention) if large else folder_stats(str(staging), convention)
        os.replace(staging, folder)  # the folder appears whole or not at all
        fsync_dir(folder.parent)
        with write_session(engine) as session:
            quotas.check_storage(session, settings, owner, total)
            dataset = stats.row(dataset_id, name or dataset_id, UPLOAD, folder, total, owner.owner_id)
            session.add(dataset)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return dataset


def corpus_root_names(settings: Settings) -> list[str]:
    """Names of the server-side corpus folders a request may register (never their paths)."""
    return sorted(settings.corpus_roots)


def _inside(base: Path, candidate: Path) -> Path | None:
    """`candidate` with symlinks and `..` resolved, if that stays inside `base` (itself resolved)."""
    resolved = candidate.resolve()
    return resolved if resolved.is_relative_to(base) else None


def register_builtin(
    engine: Engine,
    settings: Settings,
    root: str,
    subpath: str = "",
    name: str | None = None,
    owner: Principal = LOCAL,
    convention: str | None = None,
) -> tuple[Dataset, bool]:
    """Record a server-side corpus folder as a dataset; returns (dataset, created).

    The same folder registered twice gives the same dataset. Messages name the folder as
    `root/subpath`, never by its server path.
    """
    check_convention(convention)
    if root not in settings.corpus_roots:
        choices = ", ".join(corpus_root_names(settings)) or "none are configured"
        raise NotFound(f"no corpus root named {root!r} ({choices})", field="root")
    base = settings.corpus_roots[root].resolve()
    display = f"{root}/{subpath}".rstrip("/")
    try:
        folder = _inside(base, base / subpath)
        is_dir = folder is not None and folder.is_dir()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system, ...
        raise Invalid(f"{display}: not a usable path", field="path") from None
    if folder is None:
        raise Invalid(f"{display}: the path leaves the corpus root", field="path")
    if not is_dir:
        raise NotFound(f"{display}: no such corpus folder", field="path")

    with Session(engine) as session:
        existing = session.scalar(_live().where(Dataset.source == BUILTIN, Dataset.path == str(folder)))
    if existing is not None:
        return existing, False

    texts: dict[str, str] = {}
    size = 0
    for split in SPLITS:
        candidates = [folder / f"ptb.{split}.txt", folder / f"{split}.txt"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None or _inside(base, path) is None:
            raise Invalid(f"{display}: no ptb.{split}.txt or {split}.txt inside the corpus root", field="path")
        raw = path.read_bytes()
        size += len(raw)
        texts[split] = decode_split(split, raw)
    stats = corpus_stats(texts, convention)
    with write_session(engine) as session:
        existing = session.scalar(_live().where(Dataset.source == BUILTIN, Dataset.path == str(folder)))
        if existing is not None:  # registered concurrently
            return existing, False
        dataset = stats.row(new_id("ds"), name or display, BUILTIN, folder, size, owner.owner_id)
        session.add(dataset)
    return dataset, True


def _live() -> Select[Dataset]:
    """Datasets that are not deleted."""
    return select(Dataset).where(Dataset.deleted_at.is_(None))


def get_dataset(session: Session, dataset_id: str, viewer: Principal | None = None) -> Dataset:
    """A dataset by id; `NotFound` when there is none, it was deleted, or `viewer` may not see it."""
    dataset = session.get(Dataset, dataset_id)
    if (
        dataset is None
        or dataset.deleted_at is not None
        or (viewer is not None and not ownership.may_see_dataset(viewer, dataset))
    ):
        raise NotFound(f"dataset {dataset_id!r} not found")
    return dataset


def list_datasets(
    session: Session, limit: int, cursor: str | None, viewer: Principal | None = None
) -> tuple[list[Dataset], str | None]:
    """A page of the datasets `viewer` may see, newest first, and the next page's cursor."""
    stmt = _live() if viewer is None else _live().where(ownership.visible_datasets(viewer))
    return keyset_page(session, stmt, Dataset.created_at, Dataset.id, limit, cursor)


def delete_dataset(engine: Engine, settings: Settings, dataset_id: str, viewer: Principal = LOCAL) -> None:
    """Delete a dataset and, for an upload, its files (after the row change commits).

    `Conflict` while a queued or running job uses it; `Forbidden` for a server-side corpus unless
    `viewer` is an admin.
    """
    with write_session(engine) as session:
        dataset = session.get(Dataset, dataset_id, with_for_update=True)
        if dataset is None or dataset.deleted_at is not None or not ownership.may_see_dataset(viewer, dataset):
            raise NotFound(f"dataset {dataset_id!r} not found")
        if not ownership.may_delete_dataset(viewer, dataset):
            raise Forbidden(f"dataset {dataset_id} is a server-side corpus: only an admin key may delete it")
        using = session.scalar(
            select(func.count()).select_from(Job).where(Job.dataset_id == dataset_id, Job.status.in_(BUSY))
        )
        if using:
            raise Conflict(
                f"dataset {dataset_id} is used by {using} queued or running job(s); cancel them or wait until they end"
            )
        if session.scalar(select(Job.id).where(Job.dataset_id == dataset_id).limit(1)) is None:
            session.delete(dataset)
        else:
            dataset.deleted_at = utcnow()  # finished jobs still name it
        folder = Path(dataset.path)
    if dataset.source == UPLOAD and folder.resolve().is_relative_to(settings.datasets_dir.resolve()):
        shutil.rmtree(folder, ignore_errors=True)


def vocabulary_report(corpus: Corpus, cap: int | None) -> dict[str, Any]:
    """The vocabulary a job trains with (`size` words under `cap`, None: every training word) and, per
    split, how many of its tokens are `<unk>` and their share: what the perplexities are measured on."""
    report: dict[str, Any] = {"size": len(corpus.vocab), "cap": cap}
    for split in SPLITS:
        tokens = int(getattr(corpus, split).numel())
        unk = corpus.unk_count(split)
        report[f"{split}_unk"] = unk
        report[f"{split}_unk_rate"] = unk / tokens if tokens else 0.0
    return report
