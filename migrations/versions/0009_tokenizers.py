"""tokenizers: a dataset's tokenizer (kind, lower-casing, minimum count, its description), the folder
of its tokenized text, and per split its tokens, words, bytes and unknown words

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Every existing dataset's text is read, as an upload is: its tokenizer is the one its training
text is already in (PTB's text -> `ptb`, WikiText's -> `wikitext`, else `whitespace`), exactly the
detection of `model.tokenizers.detect` (a frozen copy below, so that this revision never changes).
Its files stay where they are and are read as before (`tokens_path` NULL: `path` holds text cut on
whitespace, which every word-level tokenizer leaves unchanged when it is already in its form). A
dataset whose files are gone keeps its convention's tokenizer and no split numbers.
"""

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SPLITS = ("train", "valid", "test")
EOS, UNK, NUMBER, BOM = "<eos>", "<unk>", "N", "\ufeff"
KEPT = frozenset({NUMBER, UNK, EOS})
JOINERS = frozenset({"@-@", "@,@", "@.@"})
NUMBER_RE = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:(?::|\\?/)\d+)*")
FROM_CONVENTION = {"plain": "whitespace", "ptb": "ptb", "wikitext": "wikitext"}


def detect(tokens: list[str]) -> str:
    has_number_token = has_digits_number = has_capitals = False
    for token in tokens:
        if token in JOINERS:
            return "wikitext"
        if token == NUMBER:
            has_number_token = True
        elif token not in KEPT:
            has_capitals = has_capitals or token != token.lower()
            has_digits_number = has_digits_number or NUMBER_RE.fullmatch(token) is not None
    return "ptb" if has_number_token and not has_digits_number and not has_capitals else "whitespace"


def split_file(folder: Path, split: str) -> Path | None:
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_corpus(folder: Path) -> tuple[str, dict[str, dict[str, float]], int] | None:
    """(tokenizer, per-split numbers, vocabulary size) of a whitespace-cut corpus folder, as the
    training reader reads it (lines end at "\\n"); None when a file is missing or not UTF-8."""
    lines: dict[str, list[str]] = {}
    for split in SPLITS:
        path = split_file(folder, split)
        if path is None:
            return None
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        split_lines = text.split("\n")
        if split_lines and split_lines[-1] == "":
            split_lines.pop()
        lines[split] = split_lines
    train_counts = Counter(word for line in lines["train"] for word in line.split())
    vocab = {*train_counts, EOS, UNK}
    stats: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        words = sum(len(line.split()) for line in lines[split])
        tokens = words + len(lines[split])
        if split == "train":
            unk = train_counts[UNK]
        else:
            unk = sum(1 for line in lines[split] for word in line.split() if word == UNK or word not in vocab)
        stats[split] = {
            "tokens": tokens,
            "words": words,
            # as an upload counts them (`split_lines`): without a "\r\n" line end's "\r" and a byte-order mark
            "bytes": sum(len(line.removesuffix("\r").removeprefix(BOM).encode("utf-8")) for line in lines[split]),
            "lines": len(lines[split]),
            "unk": unk,
            "unk_rate": unk / tokens if tokens else 0.0,
        }
    kind = detect([word for line in lines["train"] for word in line.split()])
    return kind, stats, len(vocab)


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild: on SQLite, rebuilding `datasets` would trip the foreign
    # keys of the jobs that name it).
    op.add_column("datasets", sa.Column("tokenizer", sa.String(length=20), server_default="whitespace", nullable=False))
    op.add_column("datasets", sa.Column("lowercase", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("datasets", sa.Column("min_count", sa.Integer(), server_default="1", nullable=False))
    op.add_column("datasets", sa.Column("tokenizer_spec", sa.JSON(), nullable=True))
    op.add_column("datasets", sa.Column("tokens_path", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("split_stats", sa.JSON(), nullable=True))

    datasets = sa.table(
        "datasets",
        sa.column("id", sa.String),
        sa.column("path", sa.Text),
        sa.column("convention", sa.String),
        sa.column("tokenizer", sa.String),
        sa.column("lowercase", sa.Boolean),
        sa.column("tokenizer_spec", sa.JSON),
        sa.column("split_stats", sa.JSON),
    )
    connection = op.get_bind()
    for dataset_id, path, convention in connection.execute(
        sa.select(datasets.c.id, datasets.c.path, datasets.c.convention)
    ).all():
        found = read_corpus(Path(path))
        if found is None:
            kind, stats = FROM_CONVENTION.get(convention, "whitespace"), None
        else:
            kind, stats, _ = found
        lowercase = kind == "ptb"
        connection.execute(
            datasets.update()
            .where(datasets.c.id == dataset_id)
            .values(
                tokenizer=kind,
                convention={"whitespace": "plain"}.get(kind, kind),
                lowercase=lowercase,
                tokenizer_spec={"kind": kind, "lowercase": lowercase, "min_count": 1},
                split_stats=stats,
            )
        )


def downgrade() -> None:
    for column in ("split_stats", "tokens_path", "tokenizer_spec", "min_count", "lowercase", "tokenizer"):
        op.drop_column("datasets", column)  # SQLite 3.35 and later drop a column in place
