"""`python -m worker [--once | --burst]`: run a training worker with the settings from the environment."""

from __future__ import annotations

import argparse
import logging
import sys

from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the worker loop."""
    parser = argparse.ArgumentParser(prog="python -m worker", description="Train queued jobs.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--once", action="store_true", help="run at most one job, then exit")
    group.add_argument("--burst", action="store_true", help="run jobs until the queue is empty, then exit")
    parser.add_argument("--worker-id", help="a stable id for this worker (default: host-pid-random)")
    parser.add_argument("--parent-pid", type=int, help="stop (handing the job back) when this parent process exits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check would log every look
    from worker.loop import Worker

    worker = Worker(Settings(), worker_id=args.worker_id)
    worker.install_signal_handlers()
    if args.parent_pid is not None:
        from worker.loop import watch_parent

        watch_parent(args.parent_pid, worker.shutdown)
    return worker.run("once" if args.once else "burst" if args.burst else "forever")


if __name__ == "__main__":
    sys.exit(main())
