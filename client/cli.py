"""`lstm-lm`: drive the LSTM language-model service from a terminal or a script.

Tables for people in a terminal; tab-separated rows (a header line first) in a pipe; `--json` for
the server's JSON. A failed command prints one line, `error: <detail>`, on stderr and exits 1 (2 for
a wrong invocation); `watch` exits 0 when the job succeeded and 3 when it ended otherwise; a stream
that cannot reconnect within `--give-up-after` seconds exits 4.

The commands live in `client.commands`, a module per group (datasets, jobs, models, scorings);
`client.output` holds what they share (consoles, one-line errors, tables, sizes and times).
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # the click Typer ships

from client.api import DEFAULT_URL, Api, resolve_key
from client.commands import datasets, jobs, models, scorings
from client.output import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, error_line

DISTRIBUTION = "lstm-lm-service"

app = typer.Typer(
    name="lstm-lm",
    help="Train, follow and use LSTM language models on an lstm-lm service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"


def show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"lstm-lm {package_version()}\n")
        raise typer.Exit()


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="LSTMLM_URL", help="the server")] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="LSTMLM_API_KEY", show_envvar=True, help="API key (default: ./data/admin.key if present)"),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="print the client's version and exit"),
    ] = False,
) -> None:
    """Options every command shares."""
    ctx.obj = Api(url, resolve_key(api_key))
    ctx.call_on_close(ctx.obj.close)


for group in (datasets, jobs, models, scorings):
    group.register(app)


def usage_line(exc: UsageError) -> str:
    """`error: Missing option '--model' / '-m' (see lstm-lm score --help)`."""
    message = exc.format_message().rstrip(".")
    command = exc.ctx.command_path if exc.ctx is not None else "lstm-lm"
    return f"{message} (see {command} --help)"


def main(argv: list[str] | None = None) -> None:
    """The `lstm-lm` console script: every failure one line on stderr, never a traceback."""
    for stream in (sys.stdout, sys.stderr):  # a name or a message the terminal cannot show is not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    code: int
    try:
        result = app(args=argv, prog_name="lstm-lm", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except NoArgsIsHelpError as exc:  # a group without its command: the help (printed already by Rich)
        if exc.format_message().strip():
            sys.stdout.write(exc.format_message() + "\n")
        code = EXIT_USAGE
    except UsageError as exc:
        error_line(usage_line(exc))
        code = EXIT_USAGE
    except ClickException as exc:
        error_line(exc.format_message())
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:  # `lstm-lm list | head -1`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_ERROR
    except Exception as exc:  # a bug: still one line, with what it was
        error_line(f"{type(exc).__name__}: {exc} (set LSTMLM_DEBUG=1 for the traceback)")
        if os.environ.get("LSTMLM_DEBUG"):
            raise
        code = EXIT_ERROR
    sys.exit(code)
