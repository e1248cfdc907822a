"""`lstm-lm watch`: follow a job's event stream with a live progress bar for the current phase
(training words/s and running perplexity, then validation and test) and a row per finished epoch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from client.api import GIVE_UP_AFTER, Api, ApiError
from client.output import duration, eta_text, live

EPOCH_KEYS = ("train_ppl", "valid_ppl", "lr", "wps")  # the worker's points after each epoch, in this order
HEADER = f"{'epoch':>5}  {'lr':>8}  {'train ppl':>10}  {'valid ppl':>10}  {'words/s':>9}"


def number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and math.isfinite(value) else "-"


class EpochRows:
    """Collects the epoch-level points (train_ppl, valid_ppl, lr, wps share the epoch's last step)
    and prints a row once an epoch's points are in."""

    def __init__(self, print_line: Any) -> None:
        self.print_line = print_line
        self.epochs = 0
        self.row: dict[str, Any] | None = None
        self.eta: float | None = None  # the job's ETA as last seen, printed at the end of each row

    def metric(self, point: dict[str, Any]) -> None:
        key, step = point["key"], point["step"]
        if key == "train_ppl":
            self.flush()
            self.row = {"step": step, "train_ppl": point["value"]}
        elif self.row is not None and step == self.row["step"] and key in EPOCH_KEYS and key not in self.row:
            self.row[key] = point["value"]
            if key == "wps":
                self.flush()

    def flush(self) -> None:
        if self.row is None or "valid_ppl" not in self.row:
            return
        if self.epochs == 0:
            self.print_line(HEADER)
        self.epochs += 1
        r, self.row = self.row, None
        self.print_line(
            f"{self.epochs:>5}  {number(r.get('lr'), '8.4g')}  {number(r['train_ppl'], '10.2f')}  "
            f"{number(r['valid_ppl'], '10.2f')}  {number(r.get('wps'), '9,.0f')}"
            + (f"  {eta_text(self.eta)}" if self.eta is not None else "")
        )


def describe(progress: dict[str, Any]) -> str:
    phase = progress.get("phase", "train")
    return f"epoch {progress.get('epoch', '?')}/{progress.get('epochs', '?')} {phase}"


def watch_job(
    api: Api,
    job_id: str,
    console: Console,
    give_up_after: float = GIVE_UP_AFTER,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Follow the job until its stream ends (reconnecting with Last-Event-ID when the server goes away,
    for at most `give_up_after` seconds at a time); returns the job as last seen."""
    job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}")
    columns = (
        TextColumn("{task.description:<17}"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("{task.fields[wps]:>7} words/s ppl {task.fields[ppl]:>7}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    ended: str | None = None
    estimate = job.get("estimate")
    if estimate and job["status"] in ("queued", "running"):
        epochs = (job.get("config") or {}).get("max_max_epoch")
        console.print(f"estimate: {estimate_text(estimate, epochs)}", markup=False, highlight=False)
    with Progress(*columns, console=console, transient=True, expand=True, disable=not live(console)) as bar:
        rows = EpochRows(lambda line: bar.console.print(line, markup=False, highlight=False))
        task: TaskID = bar.add_task(job["status"], total=None, wps="-", ppl="-", eta="")
        for event in api.follow(f"/v1/jobs/{job_id}/events", give_up_after=give_up_after, note=note):
            if event.event == "metric":
                rows.metric(event.json())
            elif event.event == "status":
                job = event.json()
                rows.eta = (job.get("progress") or {}).get("eta_seconds")
                show(bar, task, job)
            elif event.event == "end":
                ended = event.json()["status"]
        rows.flush()
    if ended == "deleted":
        raise ApiError(f"job {job_id} was deleted")
    if ended is not None and job.get("status") != ended:
        job = api.get(f"/v1/jobs/{job_id}")
    summary = f"job {job_id} {job['status']}"
    if job.get("test_ppl") is not None:
        summary += f": test perplexity {job['test_ppl']:.2f}"
    elif job.get("error"):
        summary += f": {job['error']}"
    console.print(summary, markup=False, highlight=False)
    return job


def estimate_text(estimate: dict[str, Any] | None, epochs: int | None = None) -> str:
    """`312 steps an epoch at 0.12 s a step, 37s an epoch, 5m 10s in all on cpu`."""
    if not estimate:
        return "none yet"
    parts = []
    steps, step_s, epoch_s = (estimate.get(k) for k in ("steps_per_epoch", "step_seconds", "epoch_seconds"))
    if steps is not None:
        parts.append(f"{steps:,} steps an epoch" + (f" at {step_s:.3g} s a step" if step_s is not None else ""))
    if epoch_s is not None:
        parts.append(f"{duration(epoch_s)} an epoch")
    total = estimate.get("total_seconds")
    if total is not None:
        parts.append(f"{duration(total)} in all")
    elif epoch_s is not None and epochs:
        parts.append(f"{duration(epoch_s * epochs)} for {epochs} epochs")
    text = ", ".join(parts) if parts else "none yet"
    return text + (f" on {estimate['device']}" if parts and estimate.get("device") else "")


def show(bar: Progress, task: TaskID, job: dict[str, Any]) -> None:
    """Move the bar to the job's progress: steps of the current phase, words/s, running perplexity."""
    p = job.get("progress") or {}
    if job["status"] in ("queued",) or "steps" not in p:
        bar.update(task, description=f"{job['status']}", total=None)
        return
    bar.update(
        task,
        description=describe(p) if job["status"] in ("running", "canceling") else job["status"],
        total=p["steps"],
        completed=p.get("step", 0),
        wps=number(p.get("wps"), ",.0f"),
        ppl=number(p.get("train_ppl_running"), ".2f"),
        eta=eta_text(p.get("eta_seconds")),
    )
