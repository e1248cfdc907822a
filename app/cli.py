"""`python -m app migrate | run | keys`: migrate the database, run the API with workers, manage API keys.

`run` is the one-command start: it creates the data folder, migrates, starts N `python -m worker`
processes and serves the API with uvicorn in this process, printing the URL. It supervises the
workers (`app.supervisor`): one that exits or is killed is reaped and restarted after a backoff.
On exit (Ctrl-C or SIGTERM) it restarts nothing more, asks the workers to stop (SIGTERM: they
checkpoint and requeue their jobs) and waits.
With authentication on and no key in the database, it first creates an admin key, saves it in
`<data_dir>/admin.key` (mode 0600) and prints it beside the URL; it refuses to serve with
authentication off on an address other than loopback.

`keys create` prints the new key once, alone on the last line of its output, so that a script can
capture it (`KEY=$(python -m app keys create --name ci --scope write | tail -n 1)`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from sqlalchemy.orm import Session

from app.auth import keyfile, keys
from app.auth.scopes import SCOPES
from app.errors import ServiceError
from app.settings import Settings
from app.store.db import make_engine
from app.store.migrate import head_revisions, upgrade
from app.store.storage import open_storage
from app.supervisor import Supervisor


def migrate(settings: Settings) -> None:
    """Create the data folder and bring the schema to head."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    print(f"database at revision {', '.join(sorted(head_revisions()))}", flush=True)


class Terminated(Exception):
    """SIGTERM arrived: leave the server loop through the `finally` that stops the workers."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


class StoppingServer(uvicorn.Server):
    """uvicorn's server that also calls `on_exit` as soon as SIGINT or SIGTERM asks it to stop: the
    workers' supervisor restarts nothing from then on, not even a worker that the same Ctrl-C (sent
    to the whole process group) stopped before the server has finished shutting down."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def shown_path(path: Path) -> str:
    """`path` relative to the working folder when it is inside it (as the user typed it), else absolute."""
    resolved = path.resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(resolved)


def key_note(settings: Settings) -> str:
    """Make sure an API key exists and say where it is, for the line that prints the URL."""
    if not settings.auth:
        return "authentication off"
    engine = make_engine(settings.resolved_database_url)
    try:
        path = settings.admin_key_file
        secret = keyfile.ensure_admin_key(engine, path)
    finally:
        engine.dispose()
    if secret is not None:
        return f"API key: {secret}; saved in {shown_path(path)}"
    if path.is_file():
        return f"API key in {shown_path(path)}"
    return "API keys: python -m app keys list | create"


def run(settings: Settings, host: str, port: int, workers: int) -> int:
    """Migrate, start the workers and serve the API until interrupted."""
    if not settings.auth and not is_loopback(host):
        print(
            f"refusing to serve on {host} with authentication off: anyone who can reach it could act; "
            "set LSTMLM_AUTH=on or use --host 127.0.0.1",
            file=sys.stderr,
            flush=True,
        )
        return 2
    from app.main import create_app

    # The app's own loggers (the start-up sweep, ...) as the workers print theirs; uvicorn keeps its own.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # `database at revision ...` says what it did
    migrate(settings)
    # uvicorn handles SIGTERM while it serves, then raises it again once it has shut down; this
    # handler turns that second delivery (or one before uvicorn started) into an exception, so the
    # workers are always stopped (they checkpoint and hand their jobs back) before the process ends.
    signal.signal(signal.SIGTERM, _on_sigterm)
    note = key_note(settings)
    supervisor = Supervisor(workers, settings.worker_restart_seconds, settings.worker_restart_max_seconds)
    supervisor.start()
    started = True
    try:
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        print(f"LSTM LM service on http://{shown}:{port}  ({note})", flush=True)
        print(f"API docs: http://{shown}:{port}/docs", flush=True)
        stored = open_storage(settings)
        where = "" if stored.kind == "local folder" else f"; files in {stored.url}"
        print(f"data folder {settings.data_dir.resolve()}{where}; {workers} worker(s); Ctrl-C stops", flush=True)
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="info")
        server = StoppingServer(config, on_exit=supervisor.stopping.set)
        server.run()
        started = server.started
    except (Terminated, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the workers' stop short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop()
    return 0 if started else 3  # uvicorn's exit code when it could not start (the port is taken, ...)


def storage_command(settings: Settings, action: str) -> int:
    """`storage check | create`: does the configured storage answer (and create its folder or bucket)."""
    storage = open_storage(settings)
    try:
        if action == "create":
            storage.create()
        storage.check()
    except ServiceError as exc:
        print(f"error: {storage.kind} {storage.url}: {exc.detail}", file=sys.stderr)
        return 1
    print(f"{storage.kind} {storage.url}: ok")
    return 0


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """`keys create | list | revoke` on the configured database (migrated first)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        if args.keys_command == "create":
            row, secret = keys.create_key(engine, args.name, args.scope)
            print(f"created key {row.id} {row.name!r} with scope {row.scope}; it is shown only this once:")
            print(secret, flush=True)
        elif args.keys_command == "list":
            with Session(engine) as session:
                rows = keys.list_keys(session)
            print(f"{'id':<22} {'scope':<6} {'prefix':<16} {'created':<20} {'revoked':<20} name")
            for row in rows:
                revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if row.revoked_at else "-"
                created = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{row.id:<22} {row.scope:<6} {row.prefix + '...':<16} {created:<20} {revoked:<20} {row.name}")
        else:
            row = keys.revoke_key(engine, args.id)
            print(f"revoked key {row.id} {row.name!r}")
    except ServiceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m app", description="The LSTM language-model training service.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the database schema")
    serve = sub.add_parser("run", help="migrate, start workers and serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes to start (0 for none)")
    storage_parser = sub.add_parser("storage", help="check the storage (LSTMLM_STORAGE_URL), or create its bucket")
    storage_parser.add_argument("action", choices=("check", "create"), help="create: make the folder or bucket")
    keys_parser = sub.add_parser("keys", help="create, list or revoke API keys")
    keys_sub = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (once, on the last line)")
    create.add_argument("--name", required=True, help="what the key is for, e.g. a person or a CI job")
    create.add_argument("--scope", required=True, choices=SCOPES, help="read < write < admin")
    keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key: requests with it fail from now on")
    revoke.add_argument("id", help="the key's id (key_...), from keys list")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "keys":
        return keys_command(settings, args)
    if args.command == "storage":
        return storage_command(settings, args.action)
    return run(settings, args.host, args.port, args.workers)
