"""Training jobs: `submit`, `list`, `status`, `watch`, `edit`, `cancel`, `delete`, and what a job
produced: `metrics`, `checkpoints`, `download`, `logs`."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import Progress

from client.api import GIVE_UP_AFTER, Api, ApiError
from client.commands.datasets import resolve_dataset
from client.output import (
    EXIT_INTERRUPTED,
    EXIT_JOB_NOT_SUCCEEDED,
    Column,
    age,
    api,
    count,
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
    size,
    transfer_columns,
)
from client.presets import SubmitCommand
from client.watch import estimate_text, watch_job

JsonFlag = Annotated[bool, typer.Option("--json", help="print the server's JSON instead of a table")]
GiveUpAfter = Annotated[
    float,
    typer.Option(
        "--give-up-after",
        min=0,
        help="seconds to keep reconnecting when the server goes away before giving up (exit code 4)",
    ),
]
SORTS = ("-created_at", "created_at", "valid_ppl", "test_ppl")
SCAN_PAGES = 20  # a server without list filters: pages read at most while filtering here


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value`; the value is read as JSON (numbers, true, null) and kept as text otherwise."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise fail(f"--set takes key=value, got {item!r}")
    try:
        return key.strip(), json.loads(raw)
    except ValueError:
        return key.strip(), raw


def print_queue_warning(submitted: dict[str, Any]) -> None:
    """A submitted job's or scoring's `warning` (no live worker can run it) on stderr: `warning: <text>`."""
    if submitted.get("warning"):
        note(f"warning: {submitted['warning']}")


def labels(name: str | None, tags: list[str] | None, notes: str | None) -> dict[str, Any]:
    """The name, tags and notes given on the command line, for a submission or an edit."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if tags:
        body["tags"] = list(dict.fromkeys(tags))
    if notes is not None:
        body["notes"] = notes
    return body


QuietFlag = Annotated[bool, typer.Option("--quiet", help="print only the id (for $(...) in a script)")]
NameOption = Annotated[str | None, typer.Option("--name", help='a name to find it by (edit: "" clears it)')]
TagOption = Annotated[list[str] | None, typer.Option("--tag", help="a tag (repeatable)")]
NotesOption = Annotated[str | None, typer.Option("--notes", help='free text about it (edit: "" clears it)')]
SetTagsOption = Annotated[list[str] | None, typer.Option("--tag", help="set the tags to these (repeatable)")]
AddTagOption = Annotated[list[str] | None, typer.Option("--add-tag", help="add a tag (repeatable)")]
RemoveTagOption = Annotated[list[str] | None, typer.Option("--remove-tag", help="remove a tag (repeatable)")]
ClearTagsFlag = Annotated[bool, typer.Option("--clear-tags", help="remove every tag")]


@handled
def submit(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset id, or its name when unique")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="small, medium, large or test")] = "small",
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="override a config field, key=value (repeatable; see below)")
    ] = None,
    name: NameOption = None,
    tag: TagOption = None,
    notes: NotesOption = None,
    idempotency_key: Annotated[str | None, typer.Option(help="sending the same key again returns the same job")] = None,
    estimate: Annotated[
        bool, typer.Option("--estimate", help="only print how long it would take on this server; queue nothing")
    ] = False,
    quiet: QuietFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Queue a training job on a dataset with a preset, changing config fields with --set."""
    client = api(ctx)
    body = {
        "dataset_id": resolve_dataset(client, dataset),
        "preset": preset,
        "overrides": dict(map(parse_override, overrides or [])),
    } | labels(name, tag, notes)
    if estimate:
        found = client.post("/v1/jobs/estimate", json=body)
        if as_json:
            print_json(found)
            return
        out.print(estimate_lines(found), markup=False)
        if found.get("fits") is False:
            raise fail(f"it would be refused: {found.get('problem') or 'over the server limit'}")
        return
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = client.post("/v1/jobs", json=body, headers=headers)
    print_queue_warning(job)
    if as_json:
        print_json(job)
    elif quiet:
        sys.stdout.write(f"{job['id']}\n")
    else:
        out.print(f"job {job['id']} {job['status']}: {job['message']}", markup=False)


def estimate_lines(found: dict[str, Any]) -> str:
    """What `submit --estimate` prints: the model's size, its memory and the time it would take."""
    config = found.get("config") or {}
    head = (
        f"{found.get('preset', '?')} on {found.get('dataset_id', '?')}: {count(found.get('parameters'))} parameters, "
        f"vocabulary {count(found.get('vocab_size'))}, up to {size(found.get('train_memory_bytes'))} to train"
    )
    return f"{head}\n{estimate_text(found, config.get('max_max_epoch'))}"


def eta_of(job: dict[str, Any]) -> float | None:
    return (job.get("progress") or {}).get("eta_seconds")


JOB_COLUMNS = (
    Column("job"),
    Column("name", fixed=False, keep=11),
    Column("status"),
    Column("preset", keep=10),
    Column("dataset", keep=6),
    Column("hidden", justify="right", keep=7),
    Column("layers", justify="right", keep=5),
    Column("steps cap", justify="right", keep=4),
    Column("epoch", justify="right", keep=8),
    Column("progress", justify="right", keep=9),
    Column("best valid", justify="right"),
    Column("test", justify="right"),
    Column("eta", justify="right", keep=3),
    Column("tags", fixed=False, keep=1),
    Column("age", justify="right", keep=2),
)


def job_row(job: dict[str, Any]) -> list[Any]:
    p = job.get("progress") or {}
    config = job.get("config") or {}
    epoch = f"{p['epoch']}/{p['epochs']}" if p.get("epoch") is not None else "-"
    done = f"{p.get('phase') or ''} {100 * p['fraction']:.0f}%".strip() if p.get("fraction") is not None else "-"
    if job["status"] not in ("running", "canceling"):
        epoch, done = (f"{config['max_max_epoch']}" if "max_max_epoch" in config else "-"), "-"
    return [
        job["id"],
        job.get("name"),
        job["status"],
        job["preset"],
        job["dataset_id"],
        config.get("hidden_size"),
        config.get("num_layers"),
        config.get("max_steps_per_epoch"),
        epoch,
        done,
        fmt(job.get("best_valid_ppl")),
        fmt(job.get("test_ppl")),
        duration(eta_of(job)) if eta_of(job) is not None else "-",
        ",".join(job.get("tags") or []),
        age(job.get("created_at")),
    ]


def sort_key(sort: str) -> Any:
    field = sort.lstrip("-")
    if field == "created_at":
        return lambda j: j.get("created_at") or ""
    name = "best_valid_ppl" if field == "valid_ppl" else field
    return lambda j: (j.get(name) is None, j.get(name) or 0.0)


def matches(job: dict[str, Any], q: str | None, tags: list[str], dataset_id: str | None, preset: str | None) -> bool:
    """The list filters, applied here for a server that does not apply them itself."""
    if q and q.lower() not in (job.get("name") or "").lower() and q not in job["id"]:
        return False
    if tags and not set(tags) <= set(job.get("tags") or []):
        return False
    if dataset_id and job["dataset_id"] != dataset_id:
        return False
    return not (preset and job["preset"] != preset)


def find_jobs(
    client: Api,
    limit: int,
    statuses: list[str],
    q: str | None,
    tags: list[str],
    dataset: str | None,
    preset: str | None,
    sort: str | None,
) -> list[dict[str, Any]]:
    """Jobs as the filters choose them: the server filters and sorts; one that predates filters (its
    jobs have no `tags`) is filtered and sorted here, over its first pages."""
    params: dict[str, Any] = {"status": statuses, "limit": min(max(limit, 1), 200)}
    params |= {k: v for k, v in (("q", q), ("dataset_id", dataset), ("preset", preset), ("sort", sort)) if v}
    if tags:
        params["tag"] = tags
    page = client.get("/v1/jobs", params=params)
    items: list[dict[str, Any]] = page["items"]
    filtering = q or tags or dataset or preset or sort
    if not filtering or not items or "tags" in items[0]:
        cursor = page.get("next_cursor")
        while cursor and len(items) < limit:  # more than a page
            page = client.get("/v1/jobs", params=params | {"cursor": cursor})
            items += page["items"]
            cursor = page.get("next_cursor")
        return items[:limit]
    dataset_id = resolve_dataset(client, dataset) if dataset else None
    found = [j for j in items if matches(j, q, tags, dataset_id, preset)]
    cursor, pages = page.get("next_cursor"), 1
    while cursor and pages < SCAN_PAGES and (sort or len(found) < limit):
        page = client.get("/v1/jobs", params=params | {"cursor": cursor})
        found += [j for j in page["items"] if matches(j, q, tags, dataset_id, preset)]
        cursor, pages = page.get("next_cursor"), pages + 1
    if sort:
        found.sort(key=sort_key(sort), reverse=sort == "-created_at")
    return found[:limit]


@handled
def list_jobs(
    ctx: typer.Context,
    status: Annotated[list[str] | None, typer.Option("--status", "-s", help="only these statuses (repeatable)")] = None,
    search: Annotated[str | None, typer.Option("--search", "-q", help="a part of the name, or the id")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="only jobs with this tag (repeatable)")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="dataset id, or its name when unique")] = None,
    preset: Annotated[str | None, typer.Option("--preset", "-p", help="only jobs of this preset")] = None,
    sort: Annotated[str | None, typer.Option(help=f"{', '.join(SORTS)} (default: newest first)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="jobs to show")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first: hyper-parameters, progress, best valid and test perplexity."""
    if sort is not None and sort not in SORTS:
        raise fail(f"--sort is one of {', '.join(SORTS)}, not {sort!r}")
    items = find_jobs(api(ctx), limit, status or [], search, tag or [], dataset, preset, sort)
    if as_json:
        print_json({"items": items})
        return
    show_table(JOB_COLUMNS, [job_row(job) for job in items])


def job_lines(job: dict[str, Any]) -> list[str]:
    p = job.get("progress") or {}
    config = job.get("config") or {}
    lines = [f"job       {job['id']}  {job['status']}"]
    if job.get("name"):
        lines.append(f"name      {job['name']}")
    if job.get("tags"):
        lines.append(f"tags      {', '.join(job['tags'])}")
    lines.append(f"message   {job['message']}")
    lines.append(f"preset    {job['preset']} on {job['dataset_id']}, attempt {job['attempt']} of {job['max_attempts']}")
    if config:
        cap = config.get("max_steps_per_epoch")
        lines.append(
            f"config    hidden {config.get('hidden_size')}, layers {config.get('num_layers')}, "
            f"{config.get('max_max_epoch')} epochs, steps cap {'-' if cap is None else cap}, "
            f"batch {config.get('batch_size')}, unroll {config.get('num_steps')}"
        )
    if p.get("epoch") is not None:
        lines.append(
            f"progress  epoch {p['epoch']}/{p.get('epochs')} {p.get('phase') or ''} "
            f"step {p.get('step')}/{p.get('steps')} "
            f"({100 * (p.get('fraction') or 0):.0f}%), {p.get('wps') or 0:,.0f} words/s, lr {p.get('lr')}"
        )
    if eta_of(job) is not None:
        lines.append(f"eta       {eta_text(eta_of(job))}")
    if job.get("estimate"):
        lines.append(f"estimate  {estimate_text(job['estimate'], config.get('max_max_epoch'))}")
    lines.append(
        f"perplexity  train {fmt(job.get('latest_train_ppl'))}  valid {fmt(job.get('latest_valid_ppl'))}  "
        f"best valid {fmt(job.get('best_valid_ppl'))}  test {fmt(job.get('test_ppl'))}"
    )
    if job.get("notes"):
        lines.append(f"notes     {' '.join(job['notes'].split())}")
    if job.get("error"):
        lines.append(f"error     {job['error']}")
    return lines


@handled
def status(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False) -> None:
    """A job's status, progress, ETA, estimate and perplexities."""
    body = api(ctx).get(f"/v1/jobs/{job}")
    if as_json:
        print_json(body)
        return
    for line in job_lines(body):
        out.print(line, markup=False)


@handled
def watch(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    give_up_after: GiveUpAfter = GIVE_UP_AFTER,
) -> None:
    """Follow a job to its end: a live bar with the ETA, a row per finished epoch.

    Exit 0 if it succeeded, 3 if not. Reconnects when the server goes away (exit 4 after
    --give-up-after seconds without it). Ctrl-C stops watching, not the job."""
    try:
        final = watch_job(api(ctx), job, out, give_up_after, note)
    except KeyboardInterrupt:
        err.print(f"stopped watching; job {job} goes on")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if final.get("status") != "succeeded":
        raise typer.Exit(EXIT_JOB_NOT_SUCCEEDED)


@handled
def edit(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    name: NameOption = None,
    tag: SetTagsOption = None,
    add_tag: AddTagOption = None,
    remove_tag: RemoveTagOption = None,
    clear_tags: ClearTagsFlag = False,
    notes: NotesOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Name, tag or annotate a job."""
    client, path = api(ctx), f"/v1/jobs/{job}"
    changed = client.patch(path, json=edit_body(client, path, name, tag, add_tag, remove_tag, clear_tags, notes))
    show_labels("job", changed, as_json)


def show_labels(kind: str, item: dict[str, Any], as_json: bool) -> None:
    """An edited job's or scoring's name, tags and notes (or its JSON)."""
    if as_json:
        print_json(item)
        return
    out.print(labels_line(kind, item), markup=False)


def edit_body(
    client: Api,
    path: str,
    name: str | None,
    tag: list[str] | None,
    add_tag: list[str] | None,
    remove_tag: list[str] | None,
    clear_tags: bool,
    notes: str | None,
) -> dict[str, Any]:
    """The JSON merge of an edit: tags set, or the current ones with some added and some removed; an
    empty name or notes clears it (null)."""
    body = labels(name, None, notes)
    body |= {field: None for field in ("name", "notes") if body.get(field) == ""}
    if tag or clear_tags:
        body["tags"] = [] if clear_tags and not tag else list(dict.fromkeys(tag or []))
    if add_tag or remove_tag:
        current = body.get("tags", client.get(path).get("tags") or [])
        body["tags"] = [t for t in dict.fromkeys([*current, *(add_tag or [])]) if t not in (remove_tag or [])]
    if not body:
        raise fail("nothing to change: give --name, --tag, --add-tag, --remove-tag, --clear-tags or --notes")
    return body


def labels_line(kind: str, item: dict[str, Any]) -> str:
    tags = ", ".join(item.get("tags") or []) or "-"
    notes = " ".join((item.get("notes") or "").split()) or "-"
    return f"{kind} {item['id']}: name {item.get('name') or '-'}; tags {tags}; notes {notes}"


@handled
def cancel(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False) -> None:
    """Cancel a queued or running job (a running job stops at its next step)."""
    body = api(ctx).post(f"/v1/jobs/{job}/cancel")
    if as_json:
        print_json(body)
        return
    out.print(f"job {body['id']} {body['status']}", markup=False)


@handled
def delete(ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")]) -> None:
    """Delete a finished job with its metrics, logs and checkpoints."""
    api(ctx).request("DELETE", f"/v1/jobs/{job}")
    out.print(f"job {job} deleted", markup=False)


# --- what a job produced ---


@handled
def metrics(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    key: Annotated[list[str] | None, typer.Option("--key", "-k", help="only these keys (repeatable)")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: key,step,value,timestamp")] = False,
    as_json: JsonFlag = False,
) -> None:
    """A job's metric history (all pages)."""
    client = api(ctx)
    points: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"key": key or [], "limit": 10_000} | ({"page_token": token} if token else {})
        page = client.get(f"/v1/jobs/{job}/metrics", params=params)
        points += page["metrics"]
        token = page["next_page_token"]
        if token is None:
            break
    missing = [k for k in key or [] if not any(p["key"] == k for p in points)]
    if missing:
        check_keys(client, job, missing)
    if as_json:
        print_json(points)
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["key", "step", "value", "timestamp"])
        writer.writerows([p["key"], p["step"], repr(p["value"]), p["timestamp"]] for p in points)
    else:
        columns = (Column("key"), Column("step", justify="right"), Column("value", justify="right"))
        show_table(columns, [[p["key"], p["step"], f"{p['value']:.4f}"] for p in points])


def check_keys(client: Api, job: str, missing: list[str]) -> None:
    """Refuse keys the job has no point of, naming those it has (for a server that does not refuse them)."""
    known = sorted({p["key"] for p in client.get(f"/v1/jobs/{job}/metrics", params={"limit": 10_000})["metrics"]})
    unknown = [k for k in missing if k not in known]
    if unknown and known:
        names = ", ".join(repr(k) for k in unknown)
        raise fail(f"job {job} has no metric {names}; its keys: {', '.join(known)}")


@handled
def checkpoints(
    ctx: typer.Context, job: Annotated[str, typer.Argument(help="job id")], as_json: JsonFlag = False
) -> None:
    """A job's checkpoints, the best marked."""
    body = api(ctx).get(f"/v1/jobs/{job}/checkpoints")
    if as_json:
        print_json(body)
        return
    columns = (
        Column("checkpoint"),
        Column("kind", keep=3),
        Column("epoch", justify="right", keep=4),
        Column("step", justify="right", keep=2),
        Column("valid ppl", justify="right"),
        Column("size", justify="right", keep=1),
        Column("best"),
    )
    rows = [
        [c["id"], c["kind"], c["epoch"], c["step"], fmt(c["valid_ppl"]), size(c["size_bytes"]), "*" * c["is_best"]]
        for c in body["items"]
    ]
    show_table(columns, rows)


@handled
def download(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    best: Annotated[bool, typer.Option("--best", help="the best checkpoint (default: the latest)")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file or folder to write to (default: ./<checkpoint id>.pt)")
    ] = None,
) -> None:
    """Download a job's latest (or best) checkpoint."""
    client = api(ctx)
    if output is not None:
        writable_target(output)
    body = client.get(f"/v1/jobs/{job}/checkpoints")
    if not body["items"]:
        raise fail(f"job {job} has no checkpoint yet")
    chosen = next(c for c in body["items"] if c["id"] == body["best_id"]) if best else body["items"][-1]
    target = into(output, f"{chosen['id']}.pt")
    save(client, chosen["download_url"], target)
    out.print(f"{chosen['id']} ({chosen['kind']}, epoch {chosen['epoch']}) -> {target}", markup=False)


def writable_target(output: Path) -> None:
    """Refuse, before any request, a file whose folder does not exist."""
    if output.is_dir():
        return
    folder = output.parent
    if not folder.is_dir():
        raise fail(f"cannot write {output}: the folder {folder} does not exist")


def into(output: Path | None, default_name: str) -> Path:
    """Where a download goes: the default name in the working folder or in a given folder, else the file given."""
    if output is None:
        return Path(default_name)
    return output / default_name if output.is_dir() else output


def save(client: Api, path: str, target: Path) -> None:
    """Download `path` to the file `target` with a progress bar; the file appears only once whole,
    and nothing is left behind when the download fails."""
    writable_target(target)
    partial = target.with_name(target.name + ".part")
    done = False
    try:
        with (
            Progress(*transfer_columns(), console=err, transient=True, disable=not live(err)) as progress,
            client.http.stream("GET", path) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise client.error(response)
            length = response.headers.get("content-length")
            task = progress.add_task("download", total=int(length) if length else None)
            try:
                f = partial.open("wb")
            except OSError as exc:
                raise fail(f"cannot write {target}: {exc.strerror}") from None
            with f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
                    progress.advance(task, len(chunk))
        try:
            partial.replace(target)
        except OSError as exc:
            raise fail(f"cannot write {target}: {exc.strerror}") from None
        done = True
    except httpx.TransportError as exc:
        raise ApiError(f"download from {client.url} broke: {exc}") from None
    finally:
        if not done:
            partial.unlink(missing_ok=True)


@handled
def logs(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="job id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines until the job ends")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object a line")] = False,
    give_up_after: GiveUpAfter = GIVE_UP_AFTER,
) -> None:
    """A job's log lines; -f follows them (reconnecting when the server goes away) until the job ends."""
    client = api(ctx)

    def show(line: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            stamp = datetime.fromisoformat(line["time"]).strftime("%Y-%m-%d %H:%M:%S")
            out.print(f"{stamp} {line['level']:<7} [{line['attempt']}] {line['message']}", markup=False)
        sys.stdout.flush()

    if follow:
        client.get(f"/v1/jobs/{job}")  # a job that does not exist: one error, no reconnection
        for event in client.follow(f"/v1/jobs/{job}/logs", {"follow": "true"}, give_up_after, note):
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


def register(app: typer.Typer) -> None:
    app.command(cls=SubmitCommand)(submit)
    app.command("list")(list_jobs)
    app.command()(status)
    app.command()(watch)
    app.command()(edit)
    app.command()(cancel)
    app.command()(delete)
    app.command()(metrics)
    app.command()(checkpoints)
    app.command()(download)
    app.command()(logs)
