"""Corpora: uploaded train/valid/test text, or server-side folders exposed by name, and the
tokenizer that cuts them into a model's tokens.

An upload is checked (UTF-8, words in every split, the size limit) and stored under the key
`datasets/<id>/{train,valid,test}.txt` as it came (`app.store.storage`). Then its tokenizer
(`model.tokenizers`: given, or detected from the training text) is applied, a subword model trained
first for `bpe` and `unigram`, and the tokens are stored in `datasets/<id>/tokens/`, with the
tokenizer's `tokenizer.json` (and `tokenizer.model`): that folder is what jobs train on. A
server-side folder is named by a root from `settings.corpus_roots` and an optional relative path
inside it (any path that resolves outside the root is refused); its tokens go to
`datasets/<id>/tokens/` too.
Large corpora are tokenized in a child process, never in the API's own.

The row records per split the tokens (with `<eos>` per line, as training reads them), the words
(whitespace words of the raw text) and bytes (UTF-8) that word perplexity and bits per byte divide
by, and the `<unk>` tokens under the dataset's own vocabulary. Reads take a `Session`; writes take
the `Engine`. Functions that take a `viewer` apply the ownership rules of `app.auth.ownership`
(None: no restriction, for internal callers).

A dataset is deleted with its files; while finished jobs still name it, its row stays, marked
deleted and hidden, so those jobs keep their history. Server-side corpora are never touched on disk.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session

from app.auth import ownership, quotas
from app.auth.principal import LOCAL, Principal
from app.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import keyset_page
from app.store.storage import check_key, is_object_url, join, open_storage
from app.store.tables import Dataset, Job, new_id, utcnow
from model.data import EOS, SPLITS, UNK, Corpus, Vocabulary
from model.tokenizers import (
    DEFAULT_SUBWORD_VOCAB,
    KINDS,
    LEGACY_NAMES,
    SUBWORD,
    Tokenizer,
    TokenizerError,
    detect,
    legacy_name,
    split_lines,
    train_subword,
)

UPLOAD = "upload"
BUILTIN = ownership.BUILTIN_SOURCE
BUSY = ("queued", "running", "canceling")  # job states that still read their dataset
DATASETS = "datasets"  # where datasets are stored: `datasets/<id>/`
TOKENS = "tokens"  # the tokenized corpus' folder inside a dataset's folder
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class TokenizerChoice:
    """How a new dataset's text is to be tokenized (from the upload's fields or the registration)."""

    kind: str | None = None  # None: detected from the training text (ptb, wikitext or whitespace)
    lowercase: bool | None = None  # None: only `ptb` lower-cases
    min_count: int = 1  # word-level: training words seen fewer times are <unk>
    vocab_size: int = DEFAULT_SUBWORD_VOCAB  # subword: the most pieces the model may have

    @classmethod
    def of(
        cls,
        settings: Settings,
        tokenizer: str | None = None,
        convention: str | None = None,
        lowercase: bool | None = None,
        min_count: int | None = None,
        tokenizer_vocab_size: int | None = None,
    ) -> TokenizerChoice:
        """The choice a request makes; `Invalid`, naming the field, for a value it cannot use.
        `convention` is the earlier name (`plain` is `whitespace`)."""
        if tokenizer is not None and tokenizer not in KINDS:
            raise Invalid(
                f"tokenizer: {tokenizer!r} is not one of {', '.join(KINDS)} (or leave it out to detect it)",
                field="tokenizer",
            )
        if convention is not None and convention not in LEGACY_NAMES:
            raise Invalid(
                f"convention: {convention!r} is not one of {', '.join(LEGACY_NAMES)}; use tokenizer",
                field="convention",
            )
        legacy = LEGACY_NAMES.get(convention or "")
        if tokenizer is not None and legacy is not None and tokenizer != legacy:
            raise Invalid(f"tokenizer {tokenizer!r} and convention {convention!r} disagree: give tokenizer only")
        kind = tokenizer or legacy
        subword = kind in SUBWORD
        if min_count is not None and (min_count < 1 or subword):
            reason = "a subword model has no unknown words" if subword else f"it must be at least 1, got {min_count}"
            raise Invalid(f"min_count: {reason}", field="min_count")
        if tokenizer_vocab_size is not None:
            if not subword:
                raise Invalid(
                    "tokenizer_vocab_size: only for the bpe and unigram tokenizers", field="tokenizer_vocab_size"
                )
            if not 300 <= tokenizer_vocab_size <= settings.max_tokenizer_vocab_size:
                raise Invalid(
                    f"tokenizer_vocab_size must be between 300 and {settings.max_tokenizer_vocab_size:,}, "
                    f"got {tokenizer_vocab_size:,}",
                    field="tokenizer_vocab_size",
                )
        return cls(kind, lowercase, min_count or 1, tokenizer_vocab_size or DEFAULT_SUBWORD_VOCAB)

    def matches(self, dataset: Dataset) -> bool:
        """Whether an existing dataset was tokenized as this choice asks (what it leaves open aside)."""
        if self.kind is None:
            return self.lowercase is None or dataset.lowercase == self.lowercase
        spec = dataset.tokenizer_spec or {}
        return (
            dataset.tokenizer == self.kind
            and dataset.lowercase == (self.lowercase if self.lowercase is not None else self.kind == "ptb")
            and (self.kind in SUBWORD or dataset.min_count == self.min_count)
            and (self.kind not in SUBWORD or spec.get("requested_vocab_size") == self.vocab_size)
        )


@dataclass
class SplitStats:
    """One split's numbers: what training reads and what per-word and per-byte scores divide by."""

    tokens: int = 0  # with one <eos> per line
    words: int = 0  # whitespace-separated words of the raw text
    bytes: int = 0  # UTF-8 bytes of the lines' text (line ends and byte-order marks not counted)
    lines: int = 0
    unk: int = 0  # tokens that are <unk> under the dataset's vocabulary

    def report(self) -> dict[str, Any]:
        return {**asdict(self), "unk_rate": self.unk / self.tokens if self.tokens else 0.0}


@dataclass(frozen=True)
class CorpusStats:
    splits: dict[str, SplitStats]
    vocab_size: int  # the vocabulary a job trains with unless its vocab_size caps a word-level one
    tokenizer: dict[str, Any]  # the tokenizer's settings (`Tokenizer.describe`), as the row records it
    lowercase: bool
    min_count: int
    kind: str = field(default="whitespace")

    def row(
        self,
        dataset_id: str,
        name: str,
        source: str,
        path: str,
        tokens_path: str,
        size_bytes: int,
        owner_id: str | None,
    ) -> Dataset:
        """The dataset row for a corpus with these numbers."""
        return Dataset(
            owner_id=owner_id,
            id=dataset_id,
            name=name,
            source=source,
            path=path,
            tokens_path=tokens_path,
            train_tokens=self.splits["train"].tokens,
            valid_tokens=self.splits["valid"].tokens,
            test_tokens=self.splits["test"].tokens,
            vocab_size=self.vocab_size,
            size_bytes=size_bytes,
            convention=legacy_name(self.kind),
            tokenizer=self.kind,
            lowercase=self.lowercase,
            min_count=self.min_count,
            tokenizer_spec=self.tokenizer,
            split_stats={split: stats.report() for split, stats in self.splits.items()},
        )


def decode_split(split: str, raw: bytes) -> str:
    """The text of one split; `Invalid` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{split}: not UTF-8 text (invalid byte at offset {exc.start})", field=split) from None


def tokenize_corpus(
    sources: dict[str, str], out: str, choice: TokenizerChoice, max_train_sentences: int
) -> CorpusStats:
    """Tokenize the raw splits at `sources` (paths by split) into `out/{split}.txt` and the tokenizer
    files; returns the numbers. `Invalid` for text that cannot be a corpus. Each split's text is read
    whole (an upload is at most `max_upload_bytes`), then its lines are cut and written one at a
    time: no split's tokens are held, only the training split's counts."""
    texts = {split: decode_split(split, Path(sources[split]).read_bytes()) for split in SPLITS}
    lines = {split: split_lines(text) for split, text in texts.items()}
    del texts
    kind = choice.kind or detect(word for line in lines["train"] for word in line.split())
    try:
        if kind in SUBWORD:
            tokenizer = train_subword(
                kind, lines["train"], choice.vocab_size, bool(choice.lowercase), max_train_sentences
            )
        else:
            lowercase = choice.lowercase if choice.lowercase is not None else kind == "ptb"
            tokenizer = Tokenizer(kind, lowercase=lowercase, min_count=choice.min_count)
    except TokenizerError as exc:
        raise Invalid(f"tokenizer: {exc}", field="tokenizer") from None

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    stats = {split: SplitStats() for split in SPLITS}
    train_counts: Counter[str] = Counter()
    vocab: Vocabulary | None = None
    for split in SPLITS:  # train first: its counts make the vocabulary the others are measured against
        numbers = stats[split]
        with (folder / f"{split}.txt").open("w", encoding="utf-8") as f:
            for line in lines[split]:
                tokens = tokenizer.tokens(line)
                f.write(" ".join(tokens) + "\n")
                numbers.lines += 1
                numbers.tokens += len(tokens) + 1
                numbers.words += len(line.split())
                numbers.bytes += len(line.encode("utf-8"))
                if vocab is None:
                    train_counts.update(tokens)
                else:
                    numbers.unk += sum(1 for t in tokens if t == UNK or t not in vocab)
            f.flush()
            os.fsync(f.fileno())
        if numbers.tokens == numbers.lines:
            raise Invalid(f"{split}: no words (empty file)", field=split)
        if vocab is None:
            train_counts[EOS] += numbers.lines
            vocab = Vocabulary.from_counts(
                train_counts, min_count=tokenizer.min_count, always=tokenizer.pieces() if tokenizer.subword else ()
            )
            numbers.unk = sum(n for word, n in train_counts.items() if word == UNK or word not in vocab)
    tokenizer.save(folder)
    assert vocab is not None
    description = tokenizer.describe()
    if tokenizer.subword:
        description["requested_vocab_size"] = choice.vocab_size
    return CorpusStats(stats, len(vocab), description, tokenizer.lowercase, tokenizer.min_count, kind)


def tokenize_in_child(
    sources: dict[str, str], out: str, choice: TokenizerChoice, max_train_sentences: int
) -> CorpusStats:
    """`tokenize_corpus` in a child process: a large corpus (millions of words) is decoded, cut, counted
    and a subword model trained there, so its CPU seconds and its memory never hold up the API."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(tokenize_corpus, sources, out, choice, max_train_sentences).result()


def _tokenize(settings: Settings, sources: dict[str, Path], out: Path, choice: TokenizerChoice) -> CorpusStats:
    """Tokenize here when the corpus is small and a word-level kind; in a child process otherwise."""
    size = sum(path.stat().st_size for path in sources.values())
    paths = {split: str(path) for split, path in sources.items()}
    large = size >= settings.upload_parse_process_bytes or choice.kind in SUBWORD
    run = tokenize_in_child if large else tokenize_corpus
    return run(paths, str(out), choice, settings.subword_train_sentences)


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
    choice: TokenizerChoice | None = None,
) -> Dataset:
    """Validate, store and tokenize an uploaded train/valid/test triple; nothing is left when it is
    refused.

    Each file is streamed to a local staging folder, never read whole into memory; the staged text is
    tokenized in this thread when small, in a child process when large or for a subword model. The
    folder is then published to storage whole, before the row that names it is committed.
    """
    choice = choice or TokenizerChoice()
    dataset_id = new_id("ds")
    key = dataset_key(dataset_id)
    storage = open_storage(settings)
    try:
        with storage.writing_tree(key) as staging:
            total = 0
            for split in SPLITS:
                total += store_capped(
                    files[split], staging / f"{split}.txt", settings.max_upload_bytes, "the upload", total
                )
            sources = {split: staging / f"{split}.txt" for split in SPLITS}
            stats = _tokenize(settings, sources, staging / TOKENS, choice)
        with write_session(engine) as session:
            quotas.check_storage(session, settings, owner, total)
            dataset = stats.row(dataset_id, name or dataset_id, UPLOAD, key, join(key, TOKENS), total, owner.owner_id)
            session.add(dataset)
    except BaseException:
        storage.delete_tree(key)
        raise
    return dataset


def dataset_key(dataset_id: str) -> str:
    """Where a dataset's files are stored: the upload's splits and `tokens/`."""
    return join(DATASETS, dataset_id)


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
    choice: TokenizerChoice | None = None,
) -> tuple[Dataset, bool]:
    """Record a server-side corpus folder as a dataset, tokenized as `choice` asks; returns (dataset,
    created).

    The same folder registered again with the same tokenizer (or with none named) gives the same
    dataset; with another tokenizer, a new dataset. Messages name the folder as `root/subpath`,
    never by its server path.
    """
    choice = choice or TokenizerChoice()
    if root not in settings.corpus_roots:
        choices = ", ".join(corpus_root_names(settings)) or "none are configured"
        raise NotFound(f"no corpus root named {root!r} ({choices})", field="root")
    display = f"{root}/{subpath}".rstrip("/")
    location = settings.corpus_roots[root]
    if is_object_url(location):
        folder = _object_folder(settings, location, subpath, display)
    else:
        folder = _server_folder(Path(location), subpath, display)

    def existing(session: Session) -> Dataset | None:
        rows = session.scalars(
            _live().where(Dataset.source == BUILTIN, Dataset.path == folder).order_by(Dataset.created_at)
        )
        return next((row for row in rows if choice.matches(row)), None)

    with Session(engine) as session:
        found = existing(session)
    if found is not None:
        return found, False

    sources = {split: server_split(settings, folder, split, display) for split in SPLITS}
    size = sum(path.stat().st_size for path in sources.values())
    dataset_id = new_id("ds")
    key = dataset_key(dataset_id)
    storage = open_storage(settings)
    try:
        with storage.writing_tree(key) as staging:
            stats = _tokenize(settings, sources, staging / TOKENS, choice)
        with write_session(engine) as session:
            found = existing(session)
            if found is not None:  # registered concurrently
                storage.delete_tree(key)
                return found, False
            dataset = stats.row(dataset_id, name or display, BUILTIN, folder, join(key, TOKENS), size, owner.owner_id)
            session.add(dataset)
    except BaseException:
        storage.delete_tree(key)
        raise
    return dataset, True


def _server_folder(base: Path, subpath: str, display: str) -> str:
    """A server-side corpus folder inside the local root `base`; the errors name it as `display`."""
    base = base.resolve()
    try:
        folder = _inside(base, base / subpath)
        is_dir = folder is not None and folder.is_dir()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system, ...
        raise Invalid(f"{display}: not a usable path", field="path") from None
    if folder is None:
        raise Invalid(f"{display}: the path leaves the corpus root", field="path")
    if not is_dir:
        raise NotFound(f"{display}: no such corpus folder", field="path")
    return str(folder)


def _object_folder(settings: Settings, location: str, subpath: str, display: str) -> str:
    """A server-side corpus folder under the object storage root `location` (`s3://bucket/prefix`)."""
    sub = subpath.strip("/")
    try:
        check_key(sub or "x")
    except ValueError:
        raise Invalid(f"{display}: the path leaves the corpus root", field="path") from None
    if not open_storage(settings, location).children(sub):
        raise NotFound(f"{display}: no such corpus folder", field="path")
    return join(location, sub)


def server_split(settings: Settings, folder: str, split: str, display: str | None = None) -> Path:
    """A local file with one split (`ptb.<split>.txt` or `<split>.txt`) of a server-side corpus
    folder, local or in object storage (a cached copy); `Invalid` when it has none."""
    names = (f"ptb.{split}.txt", f"{split}.txt")
    display = display or folder
    if is_object_url(folder):
        location, _, sub = folder.removeprefix("s3://").partition("/")
        bucket_root = f"s3://{location}"
        source = open_storage(settings, bucket_root)
        present = set(source.children(sub))
        name = next((n for n in names if n in present), None)
        if name is not None:
            return source.local_path(join(sub, name))
    else:
        base = Path(folder)
        for name in names:
            path = base / name
            if path.is_file() and _inside(base.resolve(), path) is not None:
                return path.resolve()
    raise Invalid(f"{display}: no ptb.{split}.txt or {split}.txt inside the corpus root", field="path")


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


def find_dataset(
    session: Session,
    ref: str,
    viewer: Principal | None,
    missing: type[NotFound] | type[Invalid] = NotFound,
    field: str = "dataset_id",
    lock: bool = False,
) -> Dataset:
    """The dataset `ref` names: its id, or its name when exactly one dataset `viewer` may see has it.
    `Invalid` (listing their ids) when several do; `missing` (NotFound, or Invalid where a request
    body names it) when none does. `lock`: FOR SHARE on PostgreSQL (a concurrent delete waits)."""

    def visible(dataset: Dataset | None) -> bool:
        return (
            dataset is not None
            and dataset.deleted_at is None
            and (viewer is None or ownership.may_see_dataset(viewer, dataset))
        )

    if "\x00" in ref:  # no id or name has one (and PostgreSQL refuses it in a query)
        raise missing(f"dataset {ref!r} not found", field=field)
    by_id = session.get(Dataset, ref, with_for_update={"read": True} if lock else None) if len(ref) <= 40 else None
    if by_id is not None and visible(by_id):
        return by_id
    stmt = _live().where(Dataset.name == ref)
    if viewer is not None:
        stmt = stmt.where(ownership.visible_datasets(viewer))
    named = list(session.scalars(stmt.order_by(Dataset.created_at, Dataset.id).limit(21)))
    if len(named) > 1:
        ids = [d.id for d in named[:20]]
        more = " and more" if len(named) > 20 else ""
        raise Invalid(
            f"{len(named) if len(named) <= 20 else 'over 20'} datasets are named {ref[:100]!r}: "
            f"give one of their ids ({', '.join(ids)}{more})",
            field=field,
            dataset_ids=ids,
        )
    if named:
        if lock:
            session.refresh(named[0], with_for_update={"read": True})
        return named[0]
    raise missing(f"dataset {ref!r} not found", field=field)


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
    # Only what this service wrote (`datasets/<id>/`), never a server-side corpus.
    open_storage(settings).delete_tree(dataset_key(dataset_id))


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
