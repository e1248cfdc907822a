"""`lstm-lm`: drive the LSTM language-model service from a terminal or a script.

Tables for people, `--json` for scripts. A failed command prints one line, `error: <detail>`, on
stderr and exits 1; `watch` exits 0 when the job succeeded and 3 when it ended otherwise.
"""

from __future__ import annotations

import csv
import functools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from client.api import DEFAULT_URL, Api, ApiError, error_of, read_events, resolve_key
from client.watch import RECONNECTS, watch_job

EXIT_ERROR = 1
EXIT_JOB_NOT_SUCCEEDED = 3
EXIT_INTERRUPTED = 130
SPLITS = ("train", "valid", "test")
TOKENIZERS = ("whitespace", "ptb", "wikitext", "bpe", "unigram")

app = typer.Typer(
    name="lstm-lm",
    help="Train, follow and use LSTM language models on an lstm-lm service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])
JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON instead of a table")]


def handled(command: F) -> F:
    """Turn an `ApiError` into one line on stderr and exit code 1; Ctrl-C into exit code 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            err.print(f"error: {exc}", markup=False)
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def api(ctx: typer.Context) -> Api:
    client: Api = ctx.obj
    return client


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def age(stamp: str | None) -> str:
    """How long ago an ISO time was, in the largest whole unit."""
    if not stamp:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="LSTMLM_URL", help="the server")] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="LSTMLM_API_KEY", show_envvar=True, help="API key (default: ./data/admin.key if present)"),
    ] = None,
) -> None:
    """Options every command shares."""
    ctx.obj = Api(url, resolve_key(api_key))
    ctx.call_on_close(ctx.obj.close)


# --- datasets and jobs ---


def split_file(folder: Path, split: str) -> Path:
    """The file of a split: `train.txt`, or PTB's `ptb.train.txt`, or any `*.train.txt`."""
    for candidate in (folder / f"{split}.txt", folder / f"ptb.{split}.txt", *sorted(folder.glob(f"*.{split}.txt"))):
        if candidate.is_file():
            return candidate
    raise ApiError(f"{folder} has no {split}.txt (nor ptb.{split}.txt)")


def multipart(files: dict[str, Path], fields: dict[str, str], progress: Progress) -> tuple[Iterator[bytes], str, int]:
    """A multipart/form-data body streamed from the files, advancing a progress bar; (body, type, length)."""
    boundary = uuid.uuid4().hex
    heads: list[tuple[bytes, Path | None, bytes]] = []
    for name, text in fields.items():
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


@app.command()
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
    as_json: JsonFlag = False,
) -> None:
    """Upload a corpus folder as a dataset, with a progress bar."""
    if not folder.is_dir():
        raise ApiError(f"{folder} is not a folder")
    if tokenizer is not None and tokenizer not in TOKENIZERS:
        raise ApiError(f"--tokenizer is one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
    files = {split: split_file(folder, split) for split in SPLITS}
    fields = {"name": name or folder.resolve().name}
    chosen = {
        "tokenizer": tokenizer,
        "lowercase": None if lowercase is None else str(lowercase).lower(),
        "min_count": None if min_count is None else str(min_count),
        "tokenizer_vocab_size": None if tokenizer_vocab_size is None else str(tokenizer_vocab_size),
    }
    fields |= {k: v for k, v in chosen.items() if v is not None}
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        body, content_type, length = multipart(files, fields, progress)
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        dataset = api(ctx).post("/v1/datasets", content=body, headers=headers)
    if as_json:
        print_json(dataset)
        return
    out.print(
        f"dataset {dataset['id']} ({dataset['name']}): {dataset['train_tokens']:,} train, "
        f"{dataset['valid_tokens']:,} valid, {dataset['test_tokens']:,} test tokens; "
        f"vocabulary {dataset['vocab_size']:,}"
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


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value`; the value is read as JSON (numbers, true, null) and kept as text otherwise."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ApiError(f"--set takes key=value, got {item!r}")
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw


@app.command()
@handled
def submit(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset id")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="small, medium, large or test")] = "small",
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a config field, key=value (repeatable)")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="sending the same key again returns the same job")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Queue a training job."""
    body = {"dataset_id": dataset, "preset": preset, "overrides": dict(map(parse_override, overrides or []))}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = api(ctx).post("/v1/jobs", json=body, headers=headers)
    print_queue_warning(job)
    if as_json:
        print_json(job)
        return
    out.print(f"job {job['id']} {job['status']}: {job['message']}")


@app.command("list")
@handled
def list_jobs(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="only these statuses (repeatable)")] = None,
    limit: Annotated[int, typer.Option(help="jobs to show, newest first")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    page = api(ctx).get("/v1/jobs", params={"status": status or [], "limit": limit})
    if as_json:
        print_json(page)
        return
    table = Table("job", "status", "preset", "dataset", "epoch", "progress", "best valid", "test", "age", box=None)
    for job in page["items"]:
        p = job["progress"] or {}
        epoch = f"{p['epoch']}/{p['epochs']}" if "epoch" in p else "-"
        done = f"{p.get('phase', '')} {100 * p['fraction']:.0f}%" if "fraction" in p else "-"
        table.add_row(
            job["id"],
            job["status"],
            job["preset"],
            job["dataset_id"],
            epoch,
            done,
            fmt(job["best_valid_ppl"]),
            fmt(job["test_ppl"]),
            age(job["created_at"]),
        )
    out.print(table)


def job_lines(job: dict[str, Any]) -> list[str]:
    p = job["progress"] or {}
    lines = [f"job       {job['id']}  {job['status']}", f"message   {job['message']}"]
    lines.append(f"preset    {job['preset']} on {job['dataset_id']}, attempt {job['attempt']} of {job['max_attempts']}")
    if "epoch" in p:
        lines.append(
            f"progress  epoch {p['epoch']}/{p['epochs']} {p.get('phase', '')} step {p.get('step')}/{p.get('steps')} "
            f"({100 * p.get('fraction', 0):.0f}%), {p.get('wps') or 0:,.0f} words/s, lr {p.get('lr')}"
        )
    lines.append(
        f"perplexity  train {fmt(job['latest_train_ppl'])}  valid {fmt(job['latest_valid_ppl'])}  "
        f"best valid {fmt(job['best_valid_ppl'])}  test {fmt(job['test_ppl'])}"
    )
    if job.get("error"):
        lines.append(f"error     {job['error']}")
    return lines


@app.command()
@handled
def status(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False) -> None:
    """A job's status, progress and perplexities."""
    body = api(ctx).get(f"/v1/jobs/{job}")
    if as_json:
        print_json(body)
        return
    for line in job_lines(body):
        out.print(line, markup=False)


@app.command()
@handled
def watch(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")]) -> None:
    """Follow a job to its end: a live bar for the epoch, a row per finished epoch. Ctrl-C stops watching only."""
    try:
        final = watch_job(api(ctx), job, out)
    except KeyboardInterrupt:
        err.print(f"stopped watching; job {job} goes on")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if final.get("status") != "succeeded":
        raise typer.Exit(EXIT_JOB_NOT_SUCCEEDED)


@app.command()
@handled
def cancel(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False) -> None:
    """Cancel a queued or running job (a running job stops at its next step)."""
    body = api(ctx).post(f"/v1/jobs/{job}/cancel")
    if as_json:
        print_json(body)
        return
    out.print(f"job {body['id']} {body['status']}")


@app.command()
@handled
def delete(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")]) -> None:
    """Delete a finished job with its metrics, logs and checkpoints."""
    api(ctx).request("DELETE", f"/v1/jobs/{job}")
    out.print(f"job {job} deleted")


# --- what a job produced ---


@app.command()
@handled
def metrics(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    key: Annotated[list[str] | None, typer.Option("--key", "-k", help="only these keys (repeatable)")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: key,step,value,timestamp")] = False,
    as_json: JsonFlag = False,
) -> None:
    """A job's metric history (all pages)."""
    points: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"key": key or [], "limit": 10_000} | ({"page_token": token} if token else {})
        page = api(ctx).get(f"/v1/jobs/{job}/metrics", params=params)
        points += page["metrics"]
        token = page["next_page_token"]
        if token is None:
            break
    if as_json:
        print_json(points)
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["key", "step", "value", "timestamp"])
        writer.writerows([p["key"], p["step"], repr(p["value"]), p["timestamp"]] for p in points)
    else:
        table = Table("key", "step", "value", box=None)
        for p in points:
            table.add_row(p["key"], str(p["step"]), f"{p['value']:.4f}")
        out.print(table)


@app.command()
@handled
def checkpoints(
    ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False
) -> None:
    """A job's checkpoints, the best marked."""
    body = api(ctx).get(f"/v1/jobs/{job}/checkpoints")
    if as_json:
        print_json(body)
        return
    table = Table("checkpoint", "kind", "epoch", "step", "valid ppl", "size", "best", box=None)
    for c in body["items"]:
        best = "*" if c["is_best"] else ""
        size = f"{c['size_bytes'] / 1e6:.1f} MB"
        table.add_row(c["id"], c["kind"], str(c["epoch"]), str(c["step"]), fmt(c["valid_ppl"]), size, best)
    out.print(table)


@app.command()
@handled
def download(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    best: Annotated[bool, typer.Option("--best", help="the best checkpoint (default: the latest)")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: <id>.pt)")] = None,
) -> None:
    """Download a job's latest (or best) checkpoint."""
    client = api(ctx)
    body = client.get(f"/v1/jobs/{job}/checkpoints")
    if not body["items"]:
        raise ApiError(f"job {job} has no checkpoint yet")
    chosen = next(c for c in body["items"] if c["id"] == body["best_id"]) if best else body["items"][-1]
    target = output or Path(f"{chosen['id']}.pt")
    save(client, chosen["download_url"], target)
    out.print(f"{chosen['id']} ({chosen['kind']}, epoch {chosen['epoch']}) -> {target}")


def save(client: Api, path: str, target: Path) -> None:
    """Download `path` to the file `target` with a progress bar; the file appears only once whole."""
    partial = target.with_name(target.name + ".part")
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        try:
            with client.http.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_of(response)
                length = response.headers.get("content-length")
                task = progress.add_task("download", total=int(length) if length else None)
                with partial.open("wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
                        progress.advance(task, len(chunk))
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(f"download from {client.url} broke: {exc}") from None
    partial.replace(target)


@app.command()
@handled
def logs(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines until the job ends")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object a line")] = False,
) -> None:
    """A job's log lines."""
    client = api(ctx)

    def show(line: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            stamp = datetime.fromisoformat(line["time"]).strftime("%Y-%m-%d %H:%M:%S")
            out.print(f"{stamp} {line['level']:<7} [{line['attempt']}] {line['message']}", markup=False)
        sys.stdout.flush()

    if follow:
        for event in client.events(f"/v1/jobs/{job}/logs", params={"follow": "true"}):
            if event.event == "log":
                show(event.json())
        return
    cursor = None
    while True:
        page = client.get(f"/v1/jobs/{job}/logs", params={"limit": 1000} | ({"cursor": cursor} if cursor else {}))
        for line in page["items"]:
            show(line)
        cursor = page["next_cursor"]
        if cursor is None:
            break


# --- models ---


def read_sentences(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


@app.command()
@handled
def score(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="job id, checkpoint id or alias")],
    source: Annotated[str, typer.Argument(help="a file of sentences, one a line; - for stdin")] = "-",
    pretokenized: Annotated[
        bool, typer.Option("--pretokenized", help="the lines are tokens already (default: the model's tokenizer)")
    ] = False,
    max_unk_rate: Annotated[
        float | None, typer.Option(help="refuse when the share of <unk> tokens, in all or in a sentence, is above it")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Perplexity of each sentence and of them all, per token, per word and in bits per byte."""
    try:
        sentences = read_sentences(source)
    except OSError as exc:
        raise ApiError(f"cannot read {source}: {exc.strerror}") from None
    if not sentences:
        raise ApiError("no sentences to score")
    request: dict[str, Any] = {"model": model, "sentences": sentences, "pretokenized": pretokenized}
    if max_unk_rate is not None:
        request["max_unk_rate"] = max_unk_rate
    body = api(ctx).post("/v1/score", json=request)
    print_warnings(body.get("warnings") or [])
    if as_json:
        print_json(body)
        return
    table = Table("#", "perplexity", "word ppl", "bits/byte", "tokens", "unk", "sentence", box=None)
    for i, (text, s) in enumerate(zip(sentences, body["sentences"], strict=True), start=1):
        table.add_row(
            str(i),
            fmt(s["perplexity"]),
            fmt(s.get("word_perplexity")),
            fmt(s.get("bits_per_byte"), 3),
            str(s["num_tokens"]),
            str(sum(s["is_unk"])),
            text,
        )
    out.print(table)
    a = body["aggregate"]
    out.print(
        f"{a['num_sentences']} sentences, {a['num_tokens']} tokens ({a['num_unk']} <unk>), "
        f"{a.get('num_words', 0)} words, {body.get('tokenizer', '?')} tokenizer"
        f"{' (pretokenized)' if body.get('pretokenized') else ''}: "
        f"corpus perplexity {fmt(a['corpus_perplexity'])}, "
        f"mean sentence perplexity {fmt(a['mean_sentence_perplexity'])}, "
        f"word perplexity {fmt(a.get('word_perplexity'))}, bits per byte {fmt(a.get('bits_per_byte'), 3)}",
        markup=False,
    )


def print_queue_warning(submitted: dict[str, Any]) -> None:
    """A submitted job's or scoring's `warning` (no live worker can run it) on stderr: `warning: <text>`."""
    if submitted.get("warning"):
        err.print(f"warning: {submitted['warning']}", markup=False)


def print_warnings(warnings: list[dict[str, Any]]) -> None:
    """Each warning of an answer on stderr, one line each: `warning: <message>`."""
    for warning in warnings:
        err.print(f"warning: {warning['message']}", markup=False)


@app.command()
@handled
def generate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="job id, checkpoint id or alias")],
    prompt: Annotated[str, typer.Option("--prompt", help="the text to continue")],
    max_tokens: Annotated[int, typer.Option(help="words to generate")] = 20,
    temperature: Annotated[float, typer.Option(help="0 is greedy")] = 1.0,
    top_k: Annotated[int | None, typer.Option(help="sample from the k likeliest words")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling")] = None,
    seed: Annotated[int | None, typer.Option(help="the same seed gives the same text")] = None,
    n: Annotated[int, typer.Option(help="continuations")] = 1,
    pretokenized: Annotated[
        bool,
        typer.Option("--pretokenized", help="the prompt is tokens already; the text is the tokens joined by spaces"),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Continue a prompt, printing words as they come."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "n": n,
        "pretokenized": pretokenized,
    }
    body |= {k: v for k, v in (("top_k", top_k), ("top_p", top_p), ("seed", seed)) if v is not None}
    client = api(ctx)
    if as_json or n > 1:
        result = client.post("/v1/generate", json=body)
        if as_json:
            print_json(result)
        else:
            for choice in result["choices"]:
                out.print(f"[{choice['index']}] {prompt} {choice['text']}", markup=False)
        return
    sys.stdout.write(prompt)
    first = True
    for event in stream_post(client, "/v1/generate", body | {"stream": True}):
        for choice in event.get("choices", []):
            text = choice.get("text") or ""
            if not text:
                continue
            # the first piece comes without a space: it starts the continuation, as `text` does
            sys.stdout.write(f" {text}" if first and prompt and not text.startswith(" ") else text)
            first = False
            sys.stdout.flush()
    sys.stdout.write("\n")


def stream_post(client: Api, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The JSON chunks of a streamed POST (`data: {...}` events until `data: [DONE]`)."""
    try:
        with client.http.stream("POST", path, json=body, timeout=httpx.Timeout(None, connect=10.0)) as response:
            if response.status_code >= 400:
                response.read()
                raise error_of(response)
            for event in read_events(response.iter_lines()):
                if event.data == "[DONE]":
                    return
                chunk = event.json()
                if "error" in chunk:
                    raise ApiError(chunk["error"].get("message", "stream failed"))
                yield chunk
    except httpx.TransportError as exc:
        raise ApiError(f"stream from {client.url} broke: {exc}") from None


@app.command()
@handled
def alias(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="the alias")],
    target: Annotated[str, typer.Argument(help="a job id (its best checkpoint) or a checkpoint id")],
    as_json: JsonFlag = False,
) -> None:
    """Name a model: point an alias at a job or a checkpoint."""
    body = api(ctx).request("PUT", f"/v1/models/aliases/{name}", json={"target": target}).json()
    if as_json:
        print_json(body)
        return
    out.print(f"alias {body['name']} -> {body['target']}")


# --- scoring jobs ---

scorings = typer.Typer(
    help="Score whole texts in the background (a file or a dataset's split, a sentence a line) and fetch the results.",
    no_args_is_help=True,
)
app.add_typer(scorings, name="scorings")
SCORING_POLL_SECONDS = 1.0


def scoring_text(s: dict[str, Any]) -> str:
    """What a scoring scores: an uploaded file, or a dataset's split."""
    return "uploaded file" if s["source"] == "upload" else f"{s['dataset_id']} {s['split']}"


def scoring_line(s: dict[str, Any]) -> str:
    """One line about a scoring: its status, lines done and corpus perplexity so far."""
    a = s["aggregate"]
    return (
        f"scoring {s['id']} {s['status']}: {s['lines_done']:,}/{s['total_lines']:,} lines of {scoring_text(s)} "
        f"with {s['model']} ({s['options']['precision']}), word perplexity {fmt(a.get('word_perplexity'))}, "
        f"corpus perplexity {fmt(a['corpus_perplexity'])}"
        + (f"; {s['message']}" if s.get("message") else "")
        + (f"; error: {s['error']}" if s.get("error") else "")
    )


@scorings.command("submit")
@handled
def scorings_submit(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="job id, checkpoint id or alias")],
    file: Annotated[Path | None, typer.Argument(help="a UTF-8 text file, one sentence a line")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="score a dataset's split instead of a file")] = None,
    split: Annotated[str, typer.Option(help="the dataset's split: train, valid or test")] = "test",
    precision: Annotated[str | None, typer.Option(help="fp32 or bf16 (default: the server's)")] = None,
    pretokenized: Annotated[
        bool, typer.Option("--pretokenized", help="the lines are tokens already (default: the model's tokenizer)")
    ] = False,
    log10: Annotated[bool, typer.Option("--log10", help="log-probabilities in base 10")] = False,
    eos: Annotated[bool, typer.Option("--eos/--no-eos", help="score each line's end of sentence")] = True,
    follow: Annotated[bool, typer.Option("--watch", help="then follow it to its end, as `scorings watch`")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Queue the scoring of a file (uploaded with a progress bar) or of a dataset's split."""
    if (file is None) == (dataset is None):
        raise ApiError("give a file to score or --dataset (with --split), not both")
    fields = {"model": model, "pretokenized": str(pretokenized).lower(), "log10": str(log10).lower()}
    fields |= {"score_eos": str(eos).lower()} | ({"precision": precision} if precision else {})
    client = api(ctx)
    if file is None:
        body = client.post("/v1/scorings", data=fields | {"dataset_id": str(dataset), "split": split})
    else:
        if not file.is_file():
            raise ApiError(f"{file} is not a file")
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            content, content_type, length = multipart({"file": file}, fields, progress)
            headers = {"Content-Type": content_type, "Content-Length": str(length)}
            body = client.post("/v1/scorings", content=content, headers=headers)
    print_queue_warning(body)
    if not as_json:
        out.print(f"scoring {body['id']} queued: {body['total_lines']:,} lines", markup=False)
    elif not follow:  # with --json --watch, only the finished scoring is printed
        print_json(body)
    if follow:
        watch_scoring(client, body["id"], as_json)


def watch_scoring(client: Api, scoring_id: str, as_json: bool = False) -> None:
    """A bar of the lines scored until the scoring ends, then the scoring; exit 3 unless it succeeded."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    failures = 0
    try:
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("queued", total=None)
            while True:
                try:
                    s = client.get(f"/v1/scorings/{scoring_id}")
                    failures = 0
                except ApiError as exc:  # the server unreachable for a moment: ask again, a few times
                    failures += 1
                    if exc.status is not None or failures > RECONNECTS:
                        raise
                    time.sleep(SCORING_POLL_SECONDS)
                    continue
                described = s["status"] + (f" ({s['message']})" if s.get("message") else "")
                progress.update(task, description=described, completed=s["lines_done"], total=s["total_lines"])
                if s["status"] in ("succeeded", "failed", "canceled"):
                    break
                time.sleep(SCORING_POLL_SECONDS)
    except KeyboardInterrupt:
        err.print(f"stopped watching; scoring {scoring_id} goes on")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    print_warnings(s.get("warnings") or [])
    if as_json:
        print_json(s)
    else:
        out.print(scoring_line(s), markup=False)
    if s["status"] != "succeeded":
        raise typer.Exit(EXIT_JOB_NOT_SUCCEEDED)


@scorings.command("watch")
@handled
def scorings_watch(
    ctx: typer.Context, scoring: Annotated[str, typer.Argument(help="scoring id")], as_json: JsonFlag = False
) -> None:
    """Follow a scoring to its end with a bar of the lines scored; exit 0 if it succeeded, 3 if not."""
    watch_scoring(api(ctx), scoring, as_json)


@scorings.command("list")
@handled
def scorings_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="scorings to show, newest first")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List scorings, newest first."""
    page = api(ctx).get("/v1/scorings", params={"limit": limit})
    if as_json:
        print_json(page)
        return
    table = Table("scoring", "status", "model", "text", "lines", "corpus ppl", "word ppl", "precision", "age", box=None)
    for s in page["items"]:
        table.add_row(
            s["id"],
            s["status"],
            s["model"],
            scoring_text(s),
            f"{s['lines_done']:,}/{s['total_lines']:,}",
            fmt(s["aggregate"]["corpus_perplexity"]),
            fmt(s["aggregate"].get("word_perplexity")),
            s["options"]["precision"],
            age(s["created_at"]),
        )
    out.print(table)


@scorings.command("status")
@handled
def scorings_status(
    ctx: typer.Context, scoring: Annotated[str, typer.Argument(help="scoring id")], as_json: JsonFlag = False
) -> None:
    """A scoring's status, progress and corpus perplexity so far."""
    body = api(ctx).get(f"/v1/scorings/{scoring}")
    print_warnings(body.get("warnings") or [])
    if as_json:
        print_json(body)
        return
    out.print(scoring_line(body), markup=False)


@scorings.command("results")
@handled
def scorings_results(
    ctx: typer.Context,
    scoring: Annotated[str, typer.Argument(help="scoring id")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: <id>.jsonl)")] = None,
) -> None:
    """Download a finished scoring's results: one JSON object a line."""
    target = output or Path(f"{scoring}.jsonl")
    save(api(ctx), f"/v1/scorings/{scoring}/results", target)
    out.print(f"scoring {scoring} -> {target}", markup=False)


@scorings.command("cancel")
@handled
def scorings_cancel(
    ctx: typer.Context, scoring: Annotated[str, typer.Argument(help="scoring id")], as_json: JsonFlag = False
) -> None:
    """Cancel a queued or running scoring (a running one stops after its current chunk)."""
    body = api(ctx).post(f"/v1/scorings/{scoring}/cancel")
    if as_json:
        print_json(body)
        return
    out.print(f"scoring {body['id']} {body['status']}", markup=False)


@scorings.command("delete")
@handled
def scorings_delete(ctx: typer.Context, scoring: Annotated[str, typer.Argument(help="scoring id")]) -> None:
    """Delete a finished scoring with its results (and its uploaded text)."""
    api(ctx).request("DELETE", f"/v1/scorings/{scoring}")
    out.print(f"scoring {scoring} deleted", markup=False)


def main() -> None:
    """The `lstm-lm` console script."""
    app(prog_name="lstm-lm")
