"""`python -m app migrate | run`: migrate the database, or migrate and run the API with workers.

`run` is the one-command start: it creates the data folder, migrates, starts N `python -m worker`
processes and serves the API with uvicorn in this process, printing the URL. On exit (Ctrl-C or
SIGTERM) it asks the workers to stop (SIGTERM: they checkpoint and requeue their jobs) and waits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import warnings
from types import FrameType

from app.settings import Settings
from app.store.migrate import head_revisions, upgrade

WORKER_STOP_SECONDS = 60.0  # how long a stopping worker may take to checkpoint before it is killed


def migrate(settings: Settings) -> None:
    """Create the data folder and bring the schema to head."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    print(f"database at revision {', '.join(sorted(head_revisions()))}", flush=True)


def start_workers(count: int) -> list[subprocess.Popen[bytes]]:
    """Start `count` worker processes with this process' environment; each stops by itself if this
    process dies without stopping it (`--parent-pid`)."""
    command = [sys.executable, "-m", "worker", "--parent-pid", str(os.getpid())]
    return [subprocess.Popen(command, env=os.environ.copy()) for _ in range(count)]


class Terminated(Exception):
    """SIGTERM arrived: leave the server loop through the `finally` that stops the workers."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


def stop_workers(workers: list[subprocess.Popen[bytes]], timeout: float = WORKER_STOP_SECONDS) -> None:
    """SIGTERM every worker, wait for them, kill any that do not stop in time."""
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(settings: Settings, host: str, port: int, workers: int) -> int:
    """Migrate, start the workers and serve the API until interrupted."""
    import uvicorn

    # torch (imported with the app) warns when NumPy is absent; nothing here uses NumPy.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    from app.main import create_app

    # The app's own loggers (the start-up sweep, ...) as the workers print theirs; uvicorn keeps its own.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    migrate(settings)
    # uvicorn handles SIGTERM while it serves, then raises it again once it has shut down; this
    # handler turns that second delivery (or one before uvicorn started) into an exception, so the
    # workers are always stopped (they checkpoint and hand their jobs back) before the process ends.
    signal.signal(signal.SIGTERM, _on_sigterm)
    procs = start_workers(workers)
    try:
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        print(f"LSTM LM service on http://{shown}:{port} (API docs: http://{shown}:{port}/docs)", flush=True)
        print(f"data folder {settings.data_dir.resolve()}; {workers} worker(s); Ctrl-C stops", flush=True)
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    except (Terminated, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the workers' stop short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_workers(procs)
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
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    return run(settings, args.host, args.port, args.workers)
