"""The README's tour runs as written: `python -m app run` (what `./scripts/serve` starts) in a fresh
folder, then the tour's client commands and its curl commands, one after another in bash, against that
live server and the real PTB files. Each must succeed and none may print a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import wait_for

from service.test_ptb import PTB_DIR
from service.test_serve import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.ptb,
    pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").is_file(), reason=f"no PTB corpus at {PTB_DIR}"),
]


def section_blocks(heading: str) -> list[str]:
    """The bash code blocks of one `## ` section of the README."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.S)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The service as the README starts it, in a folder of its own that holds the project's .venv."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").symlink_to(REPO / ".venv")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env.update({"LSTMLM_POLL_SECONDS": "0.2", "LSTMLM_HEARTBEAT_SECONDS": "0.5"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--port", str(port), "--workers", "1"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=90, interval=0.2, what="the service to be ready")
        yield folder, url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_block(script: str, folder: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env.update({"LSTMLM_URL": url, "COLUMNS": "100"})
    script = script.replace("../shared/data/ptb", str(PTB_DIR)).replace("http://127.0.0.1:8000", url)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"set -x\n{script}"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_tour_runs_as_written(served: tuple[Path, str]) -> None:
    folder, url = served
    tour, curls = section_blocks("A five-minute tour")
    done = run_block(tour, folder, url)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert "succeeded" in output  # `watch` followed the job to its end
    assert re.search(r"perplexity", output)

    done = run_block(curls, folder, url)
    assert done.returncode == 0, done.stderr[-4000:]
    answers = done.stdout
    assert '"first-run"' in answers  # the tagged run, listed
    assert '"perplexity"' in answers and '"problem' not in answers
