"""Scoring jobs: `scorings submit|watch|list|status|edit|results|cancel|delete`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from client.api import GIVE_UP_AFTER, Api, ApiError, reason_of, reconnections
from client.commands.datasets import multipart, resolve_dataset
from client.commands.jobs import (
    AddTagOption,
    ClearTagsFlag,
    GiveUpAfter,
    NameOption,
    NotesOption,
    QuietFlag,
    RemoveTagOption,
    SetTagsOption,
    TagOption,
    edit_body,
    into,
    labels_line,
    print_queue_warning,
    save,
    show_labels,
    writable_target,
)
from client.commands.models import print_warnings
from client.output import (
    EXIT_INTERRUPTED,
    EXIT_JOB_NOT_SUCCEEDED,
    Column,
    age,
    api,
    duration,
    err,
    eta_text,
    fail,
    fmt,
    handled,
    live,
    note,
    out,
    print_json,
    show_table,
    transfer_columns,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON instead of a table")]
SCORING_POLL_SECONDS = 1.0
FINAL = ("succeeded", "failed", "canceled")
SORTS = ("-created_at", "created_at")

scorings = typer.Typer(
    help="Score whole texts in the background (a file or a dataset's split, a sentence a line) and fetch the results.",
    no_args_is_help=True,
)


def scoring_text(s: dict[str, Any]) -> str:
    """What a scoring scores: an uploaded file, or a dataset's split."""
    return "uploaded file" if s["source"] == "upload" else f"{s['dataset_id']} {s['split']}"


def scoring_line(s: dict[str, Any]) -> str:
    """One line about a scoring: its status, lines done and corpus perplexity so far."""
    a = s["aggregate"]
    eta = s.get("eta_seconds")
    return (
        f"scoring {s['id']} {s['status']}: {s['lines_done']:,}/{s['total_lines']:,} lines of {scoring_text(s)} "
        f"with {s['model']} ({s['options']['precision']}), word perplexity {fmt(a.get('word_perplexity'))}, "
        f"corpus perplexity {fmt(a['corpus_perplexity'])}"
        + (f"; {eta_text(eta)}" if eta is not None and s["status"] not in FINAL else "")
        + (f"; {s['message']}" if s.get("message") else "")
        + (f"; error: {s['error']}" if s.get("error") else "")
    )


@scorings.command("submit")
@handled
def scorings_submit(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="job id, checkpoint id or alias")],
    file: Annotated[Path | None, typer.Argument(help="a UTF-8 text file, one sentence a line")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="score a dataset's split instead of a file (id or name)")
    ] = None,
    split: Annotated[str, typer.Option(help="the dataset's split: train, valid or test")] = "test",
    precision: Annotated[str | None, typer.Option(help="fp32 or bf16 (default: the server's)")] = None,
    pretokenized: Annotated[
        bool, typer.Option("--pretokenized", help="the lines are tokens already (default: the model's tokenizer)")
    ] = False,
    log10: Annotated[bool, typer.Option("--log10", help="log-probabilities in base 10")] = False,
    eos: Annotated[bool, typer.Option("--eos/--no-eos", help="score each line's end of sentence")] = True,
    name: NameOption = None,
    tag: TagOption = None,
    notes: NotesOption = None,
    follow: Annotated[bool, typer.Option("--watch", help="then follow it to its end, as `scorings watch`")] = False,
    give_up_after: GiveUpAfter = GIVE_UP_AFTER,
    quiet: QuietFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Queue the scoring of a file (uploaded with a progress bar) or of a dataset's split."""
    if (file is None) == (dataset is None):
        raise fail("give a file to score or --dataset (with --split), not both")
    fields: list[tuple[str, str]] = [
        ("model", model),
        ("pretokenized", str(pretokenized).lower()),
        ("log10", str(log10).lower()),
        ("score_eos", str(eos).lower()),
    ]
    fields += [("precision", precision)] if precision else []
    fields += [("name", name)] if name is not None else []
    fields += [("tags", t) for t in dict.fromkeys(tag or [])]
    fields += [("notes", notes)] if notes is not None else []
    client = api(ctx)
    if file is None:
        data = [*fields, ("dataset_id", resolve_dataset(client, str(dataset))), ("split", split)]
        body = client.post("/v1/scorings", data=group(data))
    else:
        if not file.is_file():
            raise fail(f"{file} is not a file")
        with Progress(*transfer_columns(), console=err, transient=True, disable=not live(err)) as progress:
            content, content_type, length = multipart({"file": file}, fields, progress)
            headers = {"Content-Type": content_type, "Content-Length": str(length)}
            body = client.post("/v1/scorings", content=content, headers=headers)
    print_queue_warning(body)
    if quiet and not as_json:
        sys.stdout.write(f"{body['id']}\n")
        sys.stdout.flush()
    elif not as_json:
        out.print(f"scoring {body['id']} queued: {body['total_lines']:,} lines", markup=False)
    elif not follow:  # with --json --watch, only the finished scoring is printed
        print_json(body)
    if follow:
        watch_scoring(client, body["id"], as_json, give_up_after, quiet)


def group(fields: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """Form fields for httpx: a name given more than once becomes a list (sent as repeated fields)."""
    grouped: dict[str, str | list[str]] = {}
    for key, value in fields:
        if key in grouped:
            before = grouped[key]
            grouped[key] = [*before, value] if isinstance(before, list) else [before, value]
        else:
            grouped[key] = value
    return grouped


def watch_scoring(
    client: Api, scoring_id: str, as_json: bool = False, give_up_after: float = GIVE_UP_AFTER, quiet: bool = False
) -> None:
    """A bar of the lines scored until the scoring ends, then the scoring; exit 3 unless it succeeded.
    While the server is away it asks again (0.5 s doubling to 5 s), saying so once, and gives up after
    `give_up_after` seconds."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    s = client.get(f"/v1/scorings/{scoring_id}")  # one that does not exist: one error, no reconnection
    outage = False
    try:
        with Progress(*columns, console=err, transient=True, disable=not live(err)) as progress:
            task = progress.add_task("queued", total=None, eta="")
            for attempt in reconnections(give_up_after):
                try:
                    s = client.get(f"/v1/scorings/{scoring_id}")
                except ApiError as exc:
                    if not exc.transient:
                        raise
                    if not outage:
                        outage = True
                        attempt.restart()
                        why = reason_of(str(exc))
                        note(f"reconnecting to {client.url}… ({why}; giving up after {give_up_after:g} s)")
                    attempt.failed(str(exc))
                    continue
                outage = False
                described = s["status"] + (f" ({s['message']})" if s.get("message") else "")
                eta = s.get("eta_seconds")
                progress.update(
                    task, description=described, completed=s["lines_done"], total=s["total_lines"], eta=eta_text(eta)
                )
                if s["status"] in FINAL:
                    break
                time.sleep(SCORING_POLL_SECONDS)
    except KeyboardInterrupt:
        err.print(f"stopped watching; scoring {scoring_id} goes on")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    print_warnings(s.get("warnings") or [])
    if as_json:
        print_json(s)
    elif not quiet:
        out.print(scoring_line(s), markup=False)
    if s["status"] != "succeeded":
        raise typer.Exit(EXIT_JOB_NOT_SUCCEEDED)


@scorings.command("watch")
@handled
def scorings_watch(
    ctx: typer.Context,
    scoring: Annotated[str, typer.Argument(help="scoring id")],
    give_up_after: GiveUpAfter = GIVE_UP_AFTER,
    as_json: JsonFlag = False,
) -> None:
    """Follow a scoring to its end with a bar of the lines scored and the ETA.

    Exit 0 if it succeeded, 3 if not. Reconnects when the server goes away (exit 4 after
    --give-up-after seconds without it)."""
    watch_scoring(api(ctx), scoring, as_json, give_up_after)


SCORING_COLUMNS = (
    Column("scoring"),
    Column("name", fixed=False, keep=5),
    Column("status"),
    Column("model", keep=8),
    Column("text", keep=6),
    Column("lines", justify="right", keep=9),
    Column("corpus ppl", justify="right"),
    Column("word ppl", justify="right", keep=7),
    Column("precision", keep=2),
    Column("eta", justify="right", keep=4),
    Column("tags", fixed=False, keep=1),
    Column("age", justify="right", keep=3),
)


def scoring_matches(s: dict[str, Any], q: str | None, tags: list[str], statuses: list[str]) -> bool:
    if q and q.lower() not in (s.get("name") or "").lower() and q not in s["id"]:
        return False
    if tags and not set(tags) <= set(s.get("tags") or []):
        return False
    return not (statuses and s["status"] not in statuses)


@scorings.command("list")
@handled
def scorings_list(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="only these statuses (repeatable)")] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", help="a part of the name, or the id")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="only those with this tag (repeatable)")] = None,
    sort: Annotated[str | None, typer.Option(help=f"{', '.join(SORTS)} (default: newest first)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="scorings to show")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List scorings, newest first."""
    params: dict[str, Any] = {"limit": min(max(limit, 1), 200), "status": status or [], "tag": tag or []}
    params |= {k: v for k, v in (("q", search), ("sort", sort)) if v}
    client = api(ctx)
    page = client.get("/v1/scorings", params=params)
    items: list[dict[str, Any]] = page["items"]
    cursor = page.get("next_cursor")
    while cursor and len(items) < limit:  # more than a page
        page = client.get("/v1/scorings", params=params | {"cursor": cursor})
        items += page["items"]
        cursor = page.get("next_cursor")
    if (search or tag or status or sort) and items and "tags" not in items[0]:  # a server without list filters
        items = [s for s in items if scoring_matches(s, search, tag or [], status or [])]
        if sort == "created_at":
            items.reverse()
    items = items[:limit]
    if as_json:
        print_json({"items": items})
        return
    rows = [
        [
            s["id"],
            s.get("name"),
            s["status"],
            s["model"],
            scoring_text(s),
            f"{s['lines_done']:,}/{s['total_lines']:,}",
            fmt(s["aggregate"]["corpus_perplexity"]),
            fmt(s["aggregate"].get("word_perplexity")),
            s["options"]["precision"],
            duration(s.get("eta_seconds")) if s["status"] not in FINAL else "-",
            ",".join(s.get("tags") or []),
            age(s["created_at"]),
        ]
        for s in items
    ]
    show_table(SCORING_COLUMNS, rows)


@scorings.command("status")
@handled
def scorings_status(
    ctx: typer.Context, scoring: Annotated[str, typer.Argument(help="scoring id")], as_json: JsonFlag = False
) -> None:
    """A scoring's status, progress, ETA and corpus perplexity so far."""
    body = api(ctx).get(f"/v1/scorings/{scoring}")
    print_warnings(body.get("warnings") or [])
    if as_json:
        print_json(body)
        return
    out.print(scoring_line(body), markup=False)
    if body.get("name") or body.get("tags") or body.get("notes"):
        out.print(labels_line("scoring", body), markup=False)


@scorings.command("edit")
@handled
def scorings_edit(
    ctx: typer.Context,
    scoring: Annotated[str, typer.Argument(help="scoring id")],
    name: NameOption = None,
    tag: SetTagsOption = None,
    add_tag: AddTagOption = None,
    remove_tag: RemoveTagOption = None,
    clear_tags: ClearTagsFlag = False,
    notes: NotesOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Name, tag or annotate a scoring."""
    client = api(ctx)
    path = f"/v1/scorings/{scoring}"
    changed = client.patch(path, json=edit_body(client, path, name, tag, add_tag, remove_tag, clear_tags, notes))
    show_labels("scoring", changed, as_json)


@scorings.command("results")
@handled
def scorings_results(
    ctx: typer.Context,
    scoring: Annotated[str, typer.Argument(help="scoring id")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file or folder to write to (default: ./<id>.jsonl)")
    ] = None,
) -> None:
    """Download a finished scoring's results: one JSON object a line."""
    if output is not None:
        writable_target(output)
    target = into(output, f"{scoring}.jsonl")
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


def register(app: typer.Typer) -> None:
    app.add_typer(scorings, name="scorings")
