"""Corpora: uploaded train/valid/test text, or server-side folders exposed by name.

An upload is checked (UTF-8, words in every split, the size limit), written under
`<datasets_dir>/<id>/{train,valid,test}.txt` and recorded with its token counts and vocabulary
size. A server-side folder is named by a root from `settings.corpus_roots` and an optional relative
path inside it; any path that resolves outside the root (`..`, absolute paths, symlinks) is refused.
Reads take a `Session`; writes take the `Engine`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.errors import Invalid, NotFound, TooLarge
from app.inference.conventions import CONVENTIONS, detect
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import keyset_page
from app.store.tables import Dataset, new_id
from model.data import SPLITS, Corpus, CorpusError, Vocabulary, tokenize_text

UPLOAD = "upload"
BUILTIN = "builtin"


@dataclass(frozen=True)
class CorpusStats:
    train_tokens: int
    valid_tokens: int
    test_tokens: int
    vocab_size: int  # types of the training split, counting <eos> and <unk>
    convention: str  # how the text is tokenized: given, or detected from the training text

    def row(self, dataset_id: str, name: str, source: str, folder: Path, size_bytes: int) -> Dataset:
        """The dataset row for a corpus with these numbers."""
        return Dataset(
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


def create_upload(
    engine: Engine, settings: Settings, name: str | None, files: dict[str, bytes], convention: str | None = None
) -> Dataset:
    """Validate and store an uploaded train/valid/test triple; nothing is written when it is refused."""
    check_convention(convention)
    total = sum(len(raw) for raw in files.values())
    if total > settings.max_upload_bytes:
        raise TooLarge(
            f"the upload has {total:,} bytes; this server accepts at most {settings.max_upload_bytes:,}",
            size_bytes=total,
            limit=settings.max_upload_bytes,
        )
    texts = {split: decode_split(split, files[split]) for split in SPLITS}
    stats = corpus_stats(texts, convention)

    dataset_id = new_id("ds")
    folder = (settings.datasets_dir / dataset_id).resolve()
    staging = folder.with_name(f".{dataset_id}.partial")
    staging.mkdir(parents=True)
    try:
        for split in SPLITS:
            (staging / f"{split}.txt").write_bytes(files[split])
        os.replace(staging, folder)  # the folder appears whole or not at all
        with write_session(engine) as session:
            dataset = stats.row(dataset_id, name or dataset_id, UPLOAD, folder, total)
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
    folder = _inside(base, base / subpath)
    if folder is None:
        raise Invalid(f"{display}: the path leaves the corpus root", field="path")
    if not folder.is_dir():
        raise NotFound(f"{display}: no such corpus folder", field="path")

    with Session(engine) as session:
        existing = session.scalar(select(Dataset).where(Dataset.source == BUILTIN, Dataset.path == str(folder)))
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
        existing = session.scalar(select(Dataset).where(Dataset.source == BUILTIN, Dataset.path == str(folder)))
        if existing is not None:  # registered concurrently
            return existing, False
        dataset = stats.row(new_id("ds"), name or display, BUILTIN, folder, size)
        session.add(dataset)
    return dataset, True


def get_dataset(session: Session, dataset_id: str) -> Dataset:
    """A dataset by id; `NotFound` otherwise."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id!r} not found")
    return dataset


def list_datasets(session: Session, limit: int, cursor: str | None) -> tuple[list[Dataset], str | None]:
    """A page of datasets, newest first, and the next page's cursor."""
    return keyset_page(session, select(Dataset), Dataset.created_at, Dataset.id, limit, cursor)


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
