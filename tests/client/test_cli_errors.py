"""Every failure is one line on stderr, never a traceback: a catalogue of wrong invocations (bad ids,
unwritable outputs, missing or wrong keys, a server that is down, values the API refuses, usage
mistakes), each exiting non-zero with exactly one line; downloads leave no partial file behind."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from service.test_serve import free_port

from .conftest import Server, clean_env


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_scoring(server: Server, trained: dict[str, Any]) -> str:
    done = server.cli("scorings", "submit", "-m", trained["job"]["id"], "-d", "tiny", "--split", "valid", "--watch")
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1]


def test_catalogue_of_wrong_invocations(
    server: Server, trained: dict[str, Any], finished_scoring: str, tmp_path: Path
) -> None:
    job_id = trained["job"]["id"]
    missing = tmp_path / "nowhere" / "deeper"
    cases: dict[tuple[str, ...], str] = {
        ("status", "job_nope"): "error: 404: job 'job_nope' not found",
        ("watch", "job_nope"): "404",
        ("logs", "job_nope", "-f"): "404",
        ("scorings", "watch", "scr_nope"): "404",
        ("download", job_id, "-o", str(missing / "x.pt")): f"the folder {missing} does not exist",
        ("scorings", "results", finished_scoring, "-o", str(missing / "x.jsonl")): "does not exist",
        ("submit", "-d", "ds_nope", "-p", "test"): "ds_nope",
        ("submit", "-d", "tiny", "-p", "enormous"): "enormous",
        ("submit", "-d", "tiny", "--set", "hidden_size"): "--set takes key=value",
        ("generate", "-m", job_id, "--prompt", "the", "--temperature", "-1"): "422: temperature must be >= 0",
        ("metrics", job_id, "-k", "nonsense"): "valid_ppl",
        ("list", "--sort", "sideways"): "--sort is one of",
        ("edit", job_id): "nothing to change",
        ("upload", str(missing)): "is not a folder",
        ("score", "-m", job_id, str(missing / "s.txt")): "cannot read",
        ("scorings", "submit", "-m", job_id, str(tmp_path / "none.txt")): "is not a file",
        ("aliases", "delete", "never-made"): "404",
        ("datasets", "show", "no-such-dataset"): "404",
        ("status",): "Missing argument",
        ("frobnicate",): "No such command",
        ("list", "--colour"): "No such option",
        ("list", "--limit", "many"): "Invalid value for '--limit'",
    }
    with ThreadPoolExecutor(4) as pool:  # each is a process of its own: a few at a time
        done = dict(zip(cases, pool.map(lambda args: server.cli(*args), cases), strict=True))
    for args, expected in cases.items():
        line = one_line(done[args])
        assert expected in line, (args, line)
    metrics = one_line(done["metrics", job_id, "-k", "nonsense"])
    assert "nonsense" in metrics and "train_ppl" in metrics
    assert not list(tmp_path.rglob("*.part"))


def test_generate_prints_nothing_on_stdout_when_refused(server: Server, trained: dict[str, Any]) -> None:
    done = server.cli("generate", "-m", trained["job"]["id"], "--prompt", "the cat", "--top-p", "7")
    line = one_line(done)
    assert done.stdout == "" and "top_p" in line
    gone = server.cli("generate", "-m", "no-such-model", "--prompt", "the cat")
    assert "404" in one_line(gone) and gone.stdout == ""


def test_keys_missing_or_refused_say_how_to_send_one(server: Server, tmp_path: Path) -> None:
    none = server.cli("list", cwd=tmp_path)  # no data/admin.key here, no LSTMLM_API_KEY
    line = one_line(none)
    assert line.startswith("error: 401: ") and "no API key was sent" in line
    assert "--api-key" in line and "LSTMLM_API_KEY" in line and "data/admin.key" in line
    wrong = one_line(server.cli("--api-key", "lsk_" + "x" * 43, "list"))
    assert "the key from --api-key was refused" in wrong and "LSTMLM_API_KEY" in wrong and "data/admin.key" in wrong


def test_a_server_that_is_down_is_named_with_where_its_url_comes_from(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "client", "--url", url, "list"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line(done)
    assert line.startswith(f"error: cannot reach {url} (connection refused)") and "LSTMLM_URL" in line


def test_download_into_a_folder_uses_the_checkpoint_name(
    server: Server, trained: dict[str, Any], finished_scoring: str, tmp_path: Path
) -> None:
    job_id = trained["job"]["id"]
    best = server.http("GET", f"/v1/jobs/{job_id}/checkpoints").json()["best_id"]
    done = server.cli("download", job_id, "--best", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"{best}.pt").is_file() and done.stdout.strip().endswith(str(tmp_path / f"{best}.pt"))
    done = server.cli("scorings", "results", finished_scoring, "-o", str(tmp_path))
    assert done.returncode == 0 and (tmp_path / f"{finished_scoring}.jsonl").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{best}.pt", f"{finished_scoring}.jsonl"])
