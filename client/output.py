"""What every command shares: the consoles, exit codes, one-line errors, numbers, times and sizes
as text, and tables (Rich in a terminal, never cutting an id or a number; tab-separated rows in a
pipe, a header line first)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.progress import DownloadColumn, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from client.api import Api, ApiError, GaveUp

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_JOB_NOT_SUCCEEDED = 3
EXIT_GAVE_UP = 4
EXIT_INTERRUPTED = 130

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> ApiError:
    """An error of the client's own (a file, an option): raise it for one line on stderr."""
    return ApiError(message)


def error_line(message: str) -> None:
    """`error: <message>` on stderr, on one line whatever the message holds."""
    err.print(f"error: {' '.join(message.split())}", markup=False, soft_wrap=True, crop=False)


def note(message: str) -> None:
    """A line on stderr that is not an error (a reconnection, a warning)."""
    err.print(" ".join(message.split()), markup=False, crop=False)


def handled(command: F) -> F:
    """Turn an `ApiError` or an `OSError` into one line on stderr and exit code 1 (4 for a stream that
    gave up reconnecting); Ctrl-C into exit code 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GaveUp as exc:
            error_line(str(exc))
            raise typer.Exit(EXIT_GAVE_UP) from None
        except ApiError as exc:
            error_line(str(exc))
            raise typer.Exit(EXIT_ERROR) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            error_line(os_error_text(exc))
            raise typer.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def os_error_text(exc: OSError) -> str:
    """`/x/y: No such file or directory`."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def api(ctx: typer.Context) -> Api:
    client: Api = ctx.find_root().obj
    return client


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def age(stamp: str | None) -> str:
    """How long ago an ISO time was, in the largest whole unit."""
    if not stamp:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"


def duration(seconds: float | None) -> str:
    """`3m 20s`, `1h 05m`, `2d 3h`, `45s`, `0.4s`; `-` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    if seconds < 1:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def eta_text(seconds: float | None) -> str:
    """`ETA 3m 20s`, or empty when unknown."""
    return "" if seconds is None else f"ETA {duration(seconds)}"


BINARY_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(num_bytes: float | None) -> str:
    """A size in binary units: `512 bytes`, `4.0 KiB`, `12.3 MiB`, `1.50 GiB`."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in BINARY_UNITS:
        if value < 1024 or unit == BINARY_UNITS[-1]:
            if unit == "bytes":
                return f"{int(value):,} bytes"
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class BinarySpeedColumn(ProgressColumn):
    """A transfer speed in binary units (`12.3 MiB/s`)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{size(speed)}/s", style="progress.data.speed")


def transfer_columns() -> tuple[ProgressColumn, ...]:
    """The columns of an upload's or a download's bar, sizes in binary units."""
    from rich.progress import BarColumn

    return (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True), BinarySpeedColumn())


# --- tables ---


def is_tty(stream: Any) -> bool:
    """Whether a stream is a terminal itself (not a pipe or a file), whatever FORCE_COLOR says."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def stdout_is_terminal() -> bool:
    return is_tty(sys.stdout)


def live(console: Console) -> bool:
    """Whether a live progress bar may draw on this console: only on a terminal."""
    return is_tty(console.file)


@dataclass(frozen=True)
class Column:
    """A column of a table. `fixed`: ids and numbers, never wrapped nor cut (the table drops columns
    instead); `keep`: the order columns are dropped in when a terminal is too narrow, lowest first
    (0 never)."""

    header: str
    fixed: bool = True
    keep: int = 0
    justify: Literal["left", "right"] = "left"


FLEX_MIN = 12  # a free-text column may fold down to this width before columns are dropped
GAP = 2  # the spaces between two columns


def cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    return " ".join(text.replace("\t", " ").splitlines()) if ("\t" in text or "\n" in text) else text


def show_table(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under their columns. To a pipe or a file: a header line, then a line per row,
    fields separated by tabs, every value whole. To a terminal: a table that drops its least
    important columns rather than cut an id or a number."""
    texts = [[cell(v) for v in row] for row in rows]
    if not stdout_is_terminal():
        lines = ["\t".join(c.header for c in columns), *("\t".join(row) for row in texts)]
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()
        return
    shown = fitting(columns, texts, out.width)
    table = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, header_style="bold")
    for i in shown:
        c = columns[i]
        natural = max([cell_len(c.header), *(cell_len(row[i]) for row in texts)])
        if c.fixed:
            table.add_column(c.header, justify=c.justify, no_wrap=True, overflow="fold", min_width=natural)
        else:
            table.add_column(c.header, justify=c.justify, overflow="fold", min_width=min(natural, FLEX_MIN))
    for row in texts:
        table.add_row(*(Text(row[i]) for i in shown))
    out.print(table, crop=False)


def fitting(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """The columns that fit in `width`, dropping those with the lowest `keep` first (0: never)."""
    natural = [max([cell_len(c.header), *(cell_len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    shown = list(range(len(columns)))

    def needed() -> int:
        widths = [natural[i] if columns[i].fixed else min(natural[i], FLEX_MIN) for i in shown]
        return sum(widths) + GAP * (len(shown) - 1)

    while needed() > width:
        droppable = [i for i in shown if columns[i].keep > 0]
        if not droppable:
            break
        shown.remove(min(droppable, key=lambda i: (columns[i].keep, -i)))
    return shown
