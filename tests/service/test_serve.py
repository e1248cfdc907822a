"""The README's run command: `python -m app run` migrates, creates and prints the first admin key
(saved in data/admin.key, mode 0600), starts a worker and serves the API on real HTTP with the
embedded defaults (SQLite and folders under ./data), then stops cleanly; it refuses to serve with
authentication off beyond loopback."""

from __future__ import annotations

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
        assert httpx.get(f"{url}/v1/jobs", timeout=10).status_code == 401
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, timeout=60, interval=0.2, what="readiness")
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
