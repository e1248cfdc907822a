"""The README's run command: `python -m app run` migrates, creates and prints the first admin key
(saved in data/admin.key, mode 0600), starts a worker and serves the API on real HTTP with the
embedded defaults (SQLite and folders under ./data), then stops cleanly; it refuses to serve with
authentication off beyond loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from harness import TINY, wait_for, write_corpus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_command_serves_the_api_with_a_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env.update({"LSTMLM_POLL_SECONDS": "0.2", "LSTMLM_HEARTBEAT_SECONDS": "0.5", "LSTMLM_TORCH_THREADS": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,  # the embedded defaults live under ./data
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: any(f"http://127.0.0.1:{port}" in line for line in lines), timeout=60, what="the URL")
        key_file = tmp_path / "data" / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        url_line = next(line for line in lines if url in line)
        assert f"(API key: {key}; saved in data/admin.key)" in url_line, url_line
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, timeout=60, interval=0.2, what="readiness")  # the URL is printed before it listens
            assert httpx.get(f"{url}/v1/jobs", timeout=10).status_code == 401
            corpus = write_corpus(tmp_path / "corpus")
            files = {s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")}
            dataset = client.post("/v1/datasets", files=files).json()
            job = client.post(
                "/v1/jobs",
                json={"dataset_id": dataset["id"], "preset": "test", "overrides": {**TINY, "max_max_epoch": 1}},
            ).json()
            wait_for(
                lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded",
                timeout=90,
                interval=0.2,
                what="the job to succeed",
            )
        assert (tmp_path / "data" / "service.db").is_file()
        assert any((tmp_path / "data" / "checkpoints" / job["id"]).iterdir())
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert "worker" in output and "stopped" in output

    # a later start keeps the key and says where it is
    second = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--port", str(port), "--workers", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = [""]
        while f"http://127.0.0.1:{port}" not in seen[-1]:  # readline returns "" only at the end
            seen.append(second.stdout.readline())  # type: ignore[union-attr]
            assert seen[-1], "".join(seen)
        assert seen[-1].rstrip().endswith("(API key in data/admin.key)"), seen[-1]
        assert key not in "".join(seen)

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=60, interval=0.2, what="the second start to serve")
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert key_file.read_text().strip() == key


def test_run_refuses_authentication_off_beyond_loopback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
    env["LSTMLM_AUTH"] = "off"
    done = subprocess.run(
        [sys.executable, "-m", "app", "run", "--host", "0.0.0.0", "--port", str(free_port()), "--workers", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to serve on 0.0.0.0 with authentication off" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


class Served:
    """`python -m app run` as a subprocess with its output collected."""

    def __init__(self, cwd: Path, workers: int, **env_overrides: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
        env.update({"LSTMLM_POLL_SECONDS": "0.2", "LSTMLM_HEARTBEAT_SECONDS": "0.5", "LSTMLM_TORCH_THREADS": "1"})
        env["LSTMLM_AUTH"] = "off"  # loopback only; the keys of the one-command start are tested above
        env.update(env_overrides)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--port", str(self.port), "--workers", str(workers)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        out = self.proc.stdout
        assert out is not None
        threading.Thread(target=lambda: self.lines.extend(iter(out.readline, "")), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self.healthy, timeout=60, interval=0.2, what="the API")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_sigterm_to_the_run_command_hands_the_job_back_and_leaves_no_process(tmp_path: Path) -> None:
    served = Served(tmp_path, workers=1)
    try:
        client = httpx.Client(base_url=served.url, timeout=10)
        corpus = write_corpus(tmp_path / "corpus", train=3000, seed=4)
        files = {s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")}
        dataset = client.post("/v1/datasets", files=files).json()
        overrides = {**TINY, "max_max_epoch": 50}
        job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "preset": "test", "overrides": overrides})
        job_id = job.json()["id"]

        def training() -> bool:
            progress = client.get(f"/v1/jobs/{job_id}").json()["progress"] or {}
            return progress.get("phase") == "train" and progress.get("step", 0) >= 20

        wait_for(training, timeout=60, interval=0.1, what="the job to train")
        worker_pid = int(
            next(w for w in _worker_pids(tmp_path / "data" / "service.db")),
        )
        served.proc.send_signal(signal.SIGTERM)  # what systemd, supervisors and `kill PID` send
        assert served.proc.wait(timeout=60) == 0, served.output()
        assert not alive(worker_pid), served.output()
    finally:
        served.kill()
    # The database tells what happened (the API is gone): queued again, with an interrupt checkpoint.
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "service.db") as db:
        status, error, note = db.execute(
            "SELECT status, error, status_note FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        kinds = [k for (k,) in db.execute("SELECT kind FROM checkpoints WHERE job_id = ?", (job_id,))]
    assert status == "queued" and error is None and "handed back" in note
    assert "interrupt" in kinds


def _worker_pids(database: Path) -> list[int]:
    import sqlite3

    with sqlite3.connect(database) as db:
        return [pid for (pid,) in db.execute("SELECT pid FROM workers WHERE stopped_at IS NULL")]


def test_kill_9_of_the_api_mid_upload_leaves_nothing_after_a_restart(tmp_path: Path) -> None:
    # Every upload parsed in a child process: the staging folder lives for its start-up at least.
    served = Served(tmp_path, workers=0, LSTMLM_UPLOAD_PARSE_PROCESS_BYTES="0")
    datasets = tmp_path / "data" / "datasets"
    corpus = write_corpus(tmp_path / "corpus", train=20_000, seed=5)
    files = {s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes()) for s in ("train", "valid", "test")}

    def send() -> None:
        with contextlib.suppress(httpx.TransportError):  # the server dies under it
            httpx.post(f"{served.url}/v1/datasets", files=files, timeout=60)

    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        wait_for(lambda: list(datasets.glob(".ds_*.partial")), timeout=60, interval=0.01, what="a staging folder")
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()
    finally:
        served.kill()
    sender.join(timeout=60)
    assert list(datasets.glob(".ds_*.partial"))  # the crash left it
    orphan = datasets / "ds_0000000000000000"  # and a folder whose row was never written
    orphan.mkdir()
    (orphan / "train.txt").write_text("a b\n")

    restarted = Served(tmp_path, workers=0, LSTMLM_STALE_WRITE_SECONDS="0")
    try:
        answer = httpx.get(f"{restarted.url}/v1/datasets", timeout=10).json()
        assert answer["items"] == []  # no half row
        assert sorted(p.name for p in datasets.iterdir()) == []
        wait_for(lambda: "an upload that never finished" in restarted.output(), timeout=10, what="the sweep's log")
        assert "a dataset folder without a dataset" in restarted.output()
    finally:
        restarted.proc.send_signal(signal.SIGTERM)
        assert restarted.proc.wait(timeout=30) == 0
        restarted.kill()
