"""Scoring jobs: a whole text (an uploaded file or a dataset split) scored line by line by a worker.

Each line (`\r\n`, `\r` and `\n` end one; a leading byte-order mark is dropped) is one sentence,
scored exactly as `/v1/score` scores it (the same options, tokenizer, limits and errors), and
written as one JSON object a line: `{"line", "num_tokens",
"num_unk", "num_words", "num_bytes", "total_logprob", "perplexity", "perplexity_without_unk",
"word_perplexity", "bits_per_byte", "unk_rate"}`. The aggregates are `/v1/score`'s, kept as
running sums while the lines go by.

The queue works as the training queue does: a worker claims a queued scoring with one conditional
UPDATE, holds a lease it renews with every chunk of lines, and writes only while it holds the
attempt. A lost worker's scoring goes back to the queue when its lease expires and continues from
its last recorded chunk.

Files (`app.store.storage`): the uploaded text is `scorings/<id>/input.txt` (a split of an uploaded
dataset is read where the dataset keeps it; a server-side corpus' split is copied there, so any
worker host can read it). Each chunk's results are one object, `scorings/<id>/results/<first
line>.jsonl`, written whole; the results are those parts in order, up to the recorded lines, so
an attempt that resumes writes the same parts again and the results come out the same.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.auth import ownership, quotas
from app.auth.principal import LOCAL, Principal
from app.errors import Conflict, Invalid, NotFound
from app.inference import registry
from app.inference.scoring import ScoreOptions, bits_per_byte, perplexity_of_logprobs
from app.settings import Settings
from app.store.db import write_session
from app.store.pagination import NEWEST_FIRST, OLDEST_FIRST, sorted_page
from app.store.storage import Entry, Storage, join, open_storage
from app.store.tables import Scoring, new_id, utcnow
from app.training import run_metadata
from app.training.datasets import BUILTIN, find_dataset, server_split, store_capped
from app.training.jobs import QUEUED, RUNNING, TERMINAL, check_statuses, name_or_id, request_cancel
from model.data import SPLITS
from model.tokenizers import split_lines, words_of

UPLOAD, DATASET = "upload", "dataset"
ATTEMPT_START = "attempt_start_lines"  # in the sums: the lines done when the current attempt began
INPUT = "input.txt"
SCORINGS, RESULTS = "scorings", "results"
PART_DIGITS = 10  # a results part is named by its first line (0-based), zero-padded: they sort in order


def scoring_key(scoring_id: str) -> str:
    """Where a scoring's files are stored."""
    return join(SCORINGS, scoring_id)


def part_key(scoring_id: str, first_line: int) -> str:
    """The results of the chunk that starts at line `first_line` (0-based)."""
    return join(scoring_key(scoring_id), RESULTS, f"{first_line:0{PART_DIGITS}d}.jsonl")


def result_parts(storage: Storage, scoring_id: str) -> list[tuple[int, Entry]]:
    """The stored results parts of a scoring, by their first line (0-based), in order."""
    parts = []
    for entry in storage.list(join(scoring_key(scoring_id), RESULTS)):
        stem = entry.key.rsplit("/", 1)[-1].removesuffix(".jsonl")
        if stem.isdigit() and len(stem) == PART_DIGITS:
            parts.append((int(stem), entry))
    return sorted(parts, key=lambda part: part[0])


def recorded_parts(storage: Storage, scoring_id: str, lines_done: int) -> list[Entry]:
    """The parts of the results recorded so far (a part past `lines_done` was written by an attempt
    that died before recording it, and is written again)."""
    return [entry for first, entry in result_parts(storage, scoring_id) if first < lines_done]


def open_results(storage: Storage, row: Scoring) -> tuple[int, Iterator[bytes]]:
    """The size and bytes of a scoring's recorded results, part after part; `NotFound` when a part
    is missing."""
    parts = recorded_parts(storage, row.id, row.lines_done)
    if sum(part.size for part in parts) != row.bytes_done:
        raise NotFound(f"the results of scoring {row.id} are missing from storage")

    def chunks() -> Iterator[bytes]:
        for part in parts:
            yield from storage.open(part.key)[1]

    return row.bytes_done, chunks()


def lines_of(text: str) -> list[str]:
    """The lines of a text, as a dataset's are read (`model.tokenizers.split_lines`)."""
    return split_lines(text)


def count_lines(path: Path, settings: Settings, field: str) -> int:
    """The lines of a text file as `lines_of` splits them, read one at a time and held to `/v1/score`'s
    limit per sentence (whitespace words; a blank line is allowed); `Invalid` when one is over it,
    when the text is not UTF-8, or when there is no line at all."""
    count = 0
    # newline=None: "\r\n", "\r" and "\n" each end a line, as `lines_of` cuts them
    with path.open(encoding="utf-8", newline=None) as text:
        try:
            for line in text:
                count += 1
                words = len(words_of(line))
                if words > settings.max_sentence_tokens:
                    raise Invalid(
                        f"line {count} has {words} words, at most {settings.max_sentence_tokens} per sentence",
                        line=count,
                    )
        except UnicodeDecodeError:
            raise Invalid(f"{field}: not UTF-8 text (line {count + 1})", field=field) from None
    if count == 0:
        raise Invalid("the text has no lines to score", field="file")
    return count


def submit(
    engine: Engine,
    session: Session,
    settings: Settings,
    model: str,
    options: ScoreOptions,
    *,
    upload: BinaryIO | None = None,
    dataset_id: str | None = None,
    split: str | None = None,
    owner: Principal = LOCAL,
    metadata: dict[str, Any] | None = None,
) -> Scoring:
    """Queue the scoring of an uploaded text or of a dataset split; nothing is stored when refused.

    An upload is copied to the scoring's folder in chunks and checked line by line from there: the
    API process never holds the whole text.
    """
    if (upload is None) == (dataset_id is None):
        raise Invalid("give either a file or a dataset_id (with a split)", field="file")
    values = run_metadata.clean(metadata or {})
    ref = registry.resolve(session, model, owner)  # 404 unknown, 409 no checkpoint yet
    scoring_id = new_id("scr")
    storage = open_storage(settings)
    input_key, server_file, field = join(scoring_key(scoring_id), INPUT), None, "file"
    if upload is None:
        if split not in SPLITS:
            raise Invalid(f"split: give one of {', '.join(SPLITS)}", field="split")
        assert dataset_id is not None
        dataset = find_dataset(session, dataset_id, owner)  # its id, or its name when only one has it
        dataset_id, field = dataset.id, split
        if dataset.source != BUILTIN and not os.path.isabs(dataset.path):
            input_key = join(dataset.path, f"{split}.txt")  # the upload's own split, as stored
        else:  # a server-side corpus (or an upload recorded by its path): copied into the scoring's input
            server_file = server_split(settings, dataset.path, split)
    quotas.check_queue(session, settings, owner)  # early, before any copying; decided again below
    try:
        size = 0
        if upload is None and server_file is None:
            total_lines = count_lines(storage.local_path(input_key), settings, field)
        else:
            with storage.writing(input_key) as path:
                if upload is not None:
                    size = store_capped(upload, path, settings.max_upload_bytes, "the file")
                    quotas.check_storage(session, settings, owner, size)  # before reading every line
                else:
                    assert server_file is not None
                    shutil.copyfile(server_file, path)
                total_lines = count_lines(path, settings, field)
        with write_session(engine) as write:  # the deciding checks, in the transaction that adds the row
            quotas.check_queue(write, settings, owner)
            quotas.check_storage(write, settings, owner, size)
            row = Scoring(
                id=scoring_id,
                owner_id=owner.owner_id,
                status=QUEUED,
                model=model,
                checkpoint_id=ref.checkpoint_id,
                checkpoint_path=ref.path,
                source=UPLOAD if upload is not None else DATASET,
                dataset_id=dataset_id,
                split=split,
                input_path=input_key,
                input_bytes=size,
                options={
                    "log10": options.log10,
                    "score_eos": options.score_eos,
                    "pretokenized": options.pretokenized,
                    "precision": options.precision,
                },
                total_lines=total_lines,
                lines_done=0,
                bytes_done=0,
                sums={},
                attempt=0,
                max_attempts=settings.max_attempts,
            )
            write.add(row)
            run_metadata.apply(write, row, values)
    except BaseException:
        storage.delete_tree(scoring_key(scoring_id))
        raise
    return row


def precision_of(options: dict[str, Any]) -> str:
    """The precision a scoring computes in (scorings stored before there was a choice: fp32)."""
    return str(options.get("precision", "fp32"))


def requirements(options: dict[str, Any]) -> list[str]:
    """What a worker must offer to run a scoring: its precision, unless fp32 (which every worker has)."""
    precision = precision_of(options)
    return [] if precision == "fp32" else [precision]


def get(session: Session, scoring_id: str, viewer: Principal = LOCAL) -> Scoring:
    """A scoring by id; `NotFound` when there is none or `viewer` may not see it."""
    row = session.get(Scoring, scoring_id)
    if row is None or not ownership.may_see(viewer, row.owner_id):
        raise NotFound(f"scoring {scoring_id!r} not found")
    return row


SORTS = (NEWEST_FIRST, OLDEST_FIRST)


def page(
    session: Session,
    limit: int,
    cursor: str | None,
    viewer: Principal = LOCAL,
    *,
    statuses: Sequence[str] | None = None,
    q: str | None = None,
    tags: Sequence[str] | None = None,
    sort: str = NEWEST_FIRST,
) -> tuple[list[Scoring], str | None]:
    """The scorings `viewer` may see, newest (or oldest) first, filtered by status, name or id (`q`)
    and tags (all of them)."""
    if sort not in SORTS:
        raise Invalid(f"sort must be one of {', '.join(SORTS)}, got {sort[:40]!r}", field="sort")
    stmt = select(Scoring).where(ownership.visible(viewer, Scoring.owner_id))
    wanted = check_statuses(statuses)
    if wanted:
        stmt = stmt.where(Scoring.status.in_(wanted))
    if q:
        stmt = stmt.where(name_or_id(q, Scoring.name, Scoring.id))
    for clause in run_metadata.has_scoring_tags(run_metadata.check_filter_tags(tags)):
        stmt = stmt.where(clause)
    return sorted_page(session, stmt, sort, Scoring.created_at, Scoring.id, limit, cursor)


def update_metadata(engine: Engine, scoring_id: str, values: dict[str, Any], viewer: Principal = LOCAL) -> Scoring:
    """Change a scoring's name, tags or notes (only the fields in `values`), whatever its status."""
    cleaned = run_metadata.clean(values)
    with write_session(engine) as session:
        row = session.get(Scoring, scoring_id, with_for_update=True)
        if row is None or not ownership.may_see(viewer, row.owner_id):
            raise NotFound(f"scoring {scoring_id!r} not found")
        run_metadata.apply(session, row, cleaned)
    return row


def eta_seconds(row: Scoring) -> float | None:
    """Seconds until a running scoring is done, from the lines its current attempt has scored per
    second since it started (a resumed attempt counts from the line it resumed at, which its worker
    records as `ATTEMPT_START` in the sums). None when it is not running or has scored nothing yet."""
    if row.status != RUNNING or row.started_at is None:
        return None
    lines = row.lines_done - int((row.sums or {}).get(ATTEMPT_START, 0))
    elapsed = (utcnow() - row.started_at).total_seconds()
    if lines <= 0 or elapsed <= 0:
        return None
    return round(elapsed / lines * max(row.total_lines - row.lines_done, 0), 1)


def cancel(engine: Engine, scoring_id: str, viewer: Principal = LOCAL) -> Scoring:
    """A queued scoring is canceled at once, a running one after its current chunk; idempotent."""
    with write_session(engine) as session:
        row = session.get(Scoring, scoring_id, with_for_update=True)
        if row is None or not ownership.may_see(viewer, row.owner_id):
            raise NotFound(f"scoring {scoring_id!r} not found")
        request_cancel(row, f"scoring {scoring_id}")
    return row


def delete(engine: Engine, settings: Settings, scoring_id: str, viewer: Principal = LOCAL) -> None:
    """Delete a finished scoring with its results (and its uploaded text); `Conflict` while it may still run."""
    with write_session(engine) as session:
        row = session.get(Scoring, scoring_id, with_for_update=True)
        if row is None or not ownership.may_see(viewer, row.owner_id):
            raise NotFound(f"scoring {scoring_id!r} not found")
        if row.status not in TERMINAL:
            raise Conflict(
                f"scoring {scoring_id} is {row.status}; cancel it and wait until it is canceled before deleting"
            )
        run_metadata.forget_tags(session, row)
        session.delete(row)
    # The row goes first: a crash between the two leaves files no row names, which nothing reads.
    open_storage(settings).delete_tree(scoring_key(scoring_id))


# --- the aggregates, as running sums ---


def pretokenized(options: dict[str, Any]) -> bool:
    """Whether a scoring reads its lines as tokens. Scorings stored before tokenizers said `normalize`
    instead, false meaning whitespace tokens: they keep that meaning."""
    if "pretokenized" in options:
        return bool(options["pretokenized"])
    return not options.get("normalize", False)


def add_to_sums(
    sums: dict[str, Any], logprobs: list[float], is_unk: list[bool], num_words: int, num_bytes: int
) -> None:
    """Add one line's natural-log token scores, and its words and bytes, to the running sums (see
    `aggregate`)."""
    known = [lp for lp, unk in zip(logprobs, is_unk, strict=True) if not unk]
    total, total_known = math.fsum(logprobs), math.fsum(known)
    sums["num_words"] = sums.get("num_words", 0) + num_words
    sums["num_bytes"] = sums.get("num_bytes", 0) + num_bytes
    sums["num_sentences"] = sums.get("num_sentences", 0) + 1
    sums["num_tokens"] = sums.get("num_tokens", 0) + len(logprobs)
    sums["num_unk"] = sums.get("num_unk", 0) + len(logprobs) - len(known)
    sums["total_ln"] = math.fsum([sums.get("total_ln", 0.0), total])
    sums["known_ln"] = math.fsum([sums.get("known_ln", 0.0), total_known])
    ppl, ppl_known = perplexity_of_logprobs(total, len(logprobs)), perplexity_of_logprobs(total_known, len(known))
    if ppl is not None:
        sums["ppl_sum"] = math.fsum([sums.get("ppl_sum", 0.0), ppl])
        sums["ppl_count"] = sums.get("ppl_count", 0) + 1
    if ppl_known is not None:
        sums["ppl_known_sum"] = math.fsum([sums.get("ppl_known_sum", 0.0), ppl_known])
        sums["ppl_known_count"] = sums.get("ppl_known_count", 0) + 1


def aggregate(sums: dict[str, Any], log10: bool) -> dict[str, Any]:
    """`/v1/score`'s aggregate over the lines scored so far."""
    tokens, unk = sums.get("num_tokens", 0), sums.get("num_unk", 0)
    total = sums.get("total_ln", 0.0)
    ppl_count, ppl_known_count = sums.get("ppl_count", 0), sums.get("ppl_known_count", 0)
    return {
        "num_sentences": sums.get("num_sentences", 0),
        "num_tokens": tokens,
        "num_unk": unk,
        "total_logprob": total / math.log(10.0) if log10 else total,
        "corpus_perplexity": perplexity_of_logprobs(total, tokens),
        "corpus_perplexity_without_unk": perplexity_of_logprobs(sums.get("known_ln", 0.0), tokens - unk),
        "mean_sentence_perplexity": sums["ppl_sum"] / ppl_count if ppl_count else None,
        "mean_sentence_perplexity_without_unk": sums["ppl_known_sum"] / ppl_known_count if ppl_known_count else None,
        "num_words": sums.get("num_words", 0),
        "num_bytes": sums.get("num_bytes", 0),
        "word_perplexity": perplexity_of_logprobs(total, sums.get("num_words", 0)),
        "bits_per_byte": bits_per_byte(total, sums.get("num_bytes", 0)),
        "unk_rate": unk / tokens if tokens else None,
    }
