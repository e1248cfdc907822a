"""Datasets: `upload`, and `datasets list|show|delete`."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from client.api import Api, ApiError
from client.output import (
    Column,
    age,
    api,
    count,
    err,
    fail,
    handled,
    live,
    out,
    print_json,
    show_table,
    size,
    transfer_columns,
)

SPLITS = ("train", "valid", "test")
TOKENIZERS = ("whitespace", "ptb", "wikitext", "bpe", "unigram")
JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON instead of a table")]

datasets = typer.Typer(help="The corpora jobs train on: list, show and delete them.", no_args_is_help=True)


def split_file(folder: Path, split: str) -> Path:
    """The file of a split: `train.txt`, or PTB's `ptb.train.txt`, or any `*.train.txt`."""
    for candidate in (folder / f"{split}.txt", folder / f"ptb.{split}.txt", *sorted(folder.glob(f"*.{split}.txt"))):
        if candidate.is_file():
            return candidate
    raise fail(f"{folder} has no {split}.txt (nor ptb.{split}.txt)")


def multipart(
    files: dict[str, Path], fields: dict[str, str] | list[tuple[str, str]], progress: Progress
) -> tuple[Iterator[bytes], str, int]:
    """A multipart/form-data body streamed from the files, advancing a progress bar; (body, type, length).
    `fields` may name a field more than once (a list of pairs)."""
    boundary = uuid.uuid4().hex
    heads: list[tuple[bytes, Path | None, bytes]] = []
    for name, text in fields.items() if isinstance(fields, dict) else fields:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        heads.append((head, None, text.encode() + b"\r\n"))
    for name, path in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        heads.append((head, path, b"\r\n"))
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + (p.stat().st_size if p else 0) + len(t) for h, p, t in heads) + len(tail)
    task = progress.add_task("upload", total=length)

    def body() -> Iterator[bytes]:
        for head, path, end in heads:
            yield head
            progress.advance(task, len(head))
            if path is not None:
                with path.open("rb") as f:
                    while chunk := f.read(256 * 1024):
                        yield chunk
                        progress.advance(task, len(chunk))
            yield end
            progress.advance(task, len(end))
        yield tail
        progress.advance(task, len(tail))

    return body(), f"multipart/form-data; boundary={boundary}", length


@handled
def upload(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="a folder with train.txt, valid.txt and test.txt")],
    name: Annotated[str | None, typer.Option(help="the dataset's name (default: the folder's)")] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help=f"{', '.join(TOKENIZERS)} (default: detected from the training text)"),
    ] = None,
    lowercase: Annotated[
        bool | None, typer.Option("--lowercase/--no-lowercase", help="lower-case the text first (default: only ptb)")
    ] = None,
    min_count: Annotated[
        int | None, typer.Option(help="word-level tokenizers: training words seen fewer times are <unk>")
    ] = None,
    tokenizer_vocab_size: Annotated[
        int | None, typer.Option(help="bpe and unigram: the most pieces (default: the server's, 16,000)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="print only the dataset's id")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Upload a corpus folder as a dataset, with a progress bar."""
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder")
    if tokenizer is not None and tokenizer not in TOKENIZERS:
        raise fail(f"--tokenizer is one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
    files = {split: split_file(folder, split) for split in SPLITS}
    fields = {"name": name or folder.resolve().name}
    chosen = {
        "tokenizer": tokenizer,
        "lowercase": None if lowercase is None else str(lowercase).lower(),
        "min_count": None if min_count is None else str(min_count),
        "tokenizer_vocab_size": None if tokenizer_vocab_size is None else str(tokenizer_vocab_size),
    }
    fields |= {k: v for k, v in chosen.items() if v is not None}
    with Progress(*transfer_columns(), console=err, transient=True, disable=not live(err)) as progress:
        body, content_type, length = multipart(files, fields, progress)
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        dataset = api(ctx).post("/v1/datasets", content=body, headers=headers)
    if as_json:
        print_json(dataset)
        return
    if quiet:
        sys.stdout.write(f"{dataset['id']}\n")
        return
    out.print(
        f"dataset {dataset['id']} ({dataset['name']}): {dataset['train_tokens']:,} train, "
        f"{dataset['valid_tokens']:,} valid, {dataset['test_tokens']:,} test tokens; "
        f"vocabulary {dataset['vocab_size']:,}",
        markup=False,
    )
    for line in dataset_lines(dataset):
        out.print(line, markup=False)


def tokenizer_text(tokenizer: dict[str, Any]) -> str:
    """`ptb (lowercase, min count 1)`, `bpe (16,000 pieces)`: a dataset's tokenizer in a few words."""
    details = ["lowercase" if tokenizer.get("lowercase") else "case kept"]
    if tokenizer.get("min_count") is not None:
        details.append(f"min count {tokenizer['min_count']:,}")
    if tokenizer.get("vocab_size") is not None:
        details.append(f"{tokenizer['vocab_size']:,} pieces")
    return f"{tokenizer['kind']} ({', '.join(details)})"


def dataset_lines(dataset: dict[str, Any]) -> list[str]:
    """The tokenizer, then a line per split: its words, tokens and share of <unk> tokens."""
    lines = [f"tokenizer {tokenizer_text(dataset['tokenizer'])}"]
    for split, stats in (dataset.get("splits") or {}).items():
        lines.append(
            f"  {split:<5} {stats['words']:>12,} words {stats['tokens']:>12,} tokens  "
            f"unk {stats['unk']:,} ({100 * stats['unk_rate']:.2f}%)"
        )
    return lines


def all_datasets(client: Api, most: int | None = None) -> list[dict[str, Any]]:
    """Every dataset the key may see (newest first), following the pages; at most `most`."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/datasets", params=params)
        items += page["items"]
        cursor = page.get("next_cursor")
        if cursor is None or (most is not None and len(items) >= most):
            return items[:most] if most is not None else items


def resolve_dataset(client: Api, ref: str) -> str:
    """A dataset id from an id or a name: a name must name exactly one dataset. An unknown
    reference is passed on as it is, for the server to say what it makes of it."""
    if ref.startswith("ds_"):
        return ref
    try:
        found = all_datasets(client)
    except ApiError as exc:
        if exc.status in (401, 403) or exc.status is None:
            raise
        return ref
    if any(d["id"] == ref for d in found):
        return ref
    named = [d for d in found if d["name"] == ref]
    if len(named) > 1:
        ids = ", ".join(d["id"] for d in named)
        raise fail(f"{len(named)} datasets are named {ref!r} ({ids}): give the id")
    return named[0]["id"] if named else ref


DATASET_COLUMNS = (
    Column("dataset"),
    Column("name", fixed=False),
    Column("tokenizer", keep=3),
    Column("vocabulary", justify="right", keep=2),
    Column("train tokens", justify="right", keep=4),
    Column("size", justify="right", keep=5),
    Column("source", keep=1),
    Column("age", justify="right", keep=6),
)


@handled
def datasets_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="datasets to show, newest first")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List datasets, newest first: id, name, tokenizer, vocabulary, size."""
    items = all_datasets(api(ctx), limit)
    if as_json:
        print_json({"items": items})
        return
    rows = [
        [
            d["id"],
            d["name"],
            d["tokenizer"]["kind"],
            count(d["vocab_size"]),
            count(d["train_tokens"]),
            size(d.get("size_bytes")),
            d.get("source"),
            age(d.get("created_at")),
        ]
        for d in items
    ]
    show_table(DATASET_COLUMNS, rows)


@handled
def datasets_show(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="dataset id or name")],
    as_json: JsonFlag = False,
) -> None:
    """A dataset: tokens, vocabulary, tokenizer and each split's words, tokens and <unk> share."""
    client = api(ctx)
    body = client.get(f"/v1/datasets/{resolve_dataset(client, dataset)}")
    if as_json:
        print_json(body)
        return
    out.print(
        f"dataset {body['id']} ({body['name']}, {body.get('source', '?')}): {body['train_tokens']:,} train, "
        f"{body['valid_tokens']:,} valid, {body['test_tokens']:,} test tokens; vocabulary {body['vocab_size']:,}; "
        f"{size(body.get('size_bytes'))}",
        markup=False,
    )
    for line in dataset_lines(body):
        out.print(line, markup=False)


@handled
def datasets_delete(ctx: typer.Context, dataset: Annotated[str, typer.Argument(help="dataset id or name")]) -> None:
    """Delete a dataset and its files (refused while a queued or running job uses it)."""
    client = api(ctx)
    dataset_id = resolve_dataset(client, dataset)
    client.request("DELETE", f"/v1/datasets/{dataset_id}")
    out.print(f"dataset {dataset_id} deleted", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(upload)
    datasets.command("list")(datasets_list)
    datasets.command("show")(datasets_show)
    datasets.command("delete")(datasets_delete)
    app.add_typer(datasets, name="datasets")
