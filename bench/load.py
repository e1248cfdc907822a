"""The service under load, on loopback only: `/healthz` latency while a 60 MB corpus is uploaded
and parsed, scoring throughput and latency at rising concurrency, and a training job's words per
second with and without that scoring load.

Starts `python -m app run` (the API and one worker) on 127.0.0.1 with a fresh data folder, trains
a tiny model to score with, and prints a Markdown report (also written to `--out`). Every phase is
bounded in count and time; nothing is asserted.

    .venv/bin/python bench/load.py                         # the defaults: about two minutes
    .venv/bin/python bench/load.py --upload-mb 60 --seconds 5 --out docs/results/load.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from serving import free_port, wait_until_up

REPO = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 32, "num_steps": 10, "batch_size": 8, "device": "cpu"}
WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "big", "red", "N")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ms(values: list[float]) -> str:
    return f"{percentile(values, 50) * 1000:.1f} / {percentile(values, 99) * 1000:.1f} / {max(values) * 1000:.1f}"


def lines(count: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + "\n" for _ in range(count))


def big_corpus(path: Path, megabytes: int, seed: int = 0) -> Path:
    """About `megabytes` MB of text over about two million distinct words (the worst case for parsing)."""
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    with path.open("w", encoding="utf-8") as out:
        written = 0
        while written < target:
            line = " ".join(f"w{rng.randrange(2_000_000)}" for _ in range(12)) + "\n"
            out.write(line)
            written += len(line)
    return path


class Service:
    """`python -m app run --workers 1` on a free loopback port with its own data folder."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LSTMLM_")}
        env.update({"LSTMLM_DATA_DIR": str(data), "LSTMLM_TORCH_THREADS": "1", "LSTMLM_POLL_SECONDS": "0.2"})
        self.log = (data.parent / "service.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until_up(f"{self.url}/healthz", self.proc, 120)
        # API keys on, as served: the one-command start saved its admin key under the data folder.
        self.headers = {"Authorization": f"Bearer {(data / 'admin.key').read_text().strip()}"}
        self.client = httpx.Client(base_url=self.url, timeout=300, headers=self.headers)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def upload(self, folder: Path | None = None, texts: dict[str, str] | None = None) -> dict[str, Any]:
        if folder is not None:
            files = {s: (f"{s}.txt", (folder / f"{s}.txt").open("rb")) for s in ("train", "valid", "test")}
        else:
            assert texts is not None
            files = {s: (f"{s}.txt", texts[s].encode()) for s in ("train", "valid", "test")}
        response = self.client.post("/v1/datasets", files=files)
        response.raise_for_status()
        return dict(response.json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/v1/jobs/{job_id}").json())

    def wait(self, job_id: str, statuses: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in statuses:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(0.2)
        return job


def healthz_while(service: Service, busy: threading.Thread | None, count: int, interval: float) -> list[float]:
    """`/healthz` latencies, one request every `interval` s, while `busy` runs (or `count` requests)."""
    latencies: list[float] = []
    with httpx.Client(base_url=service.url, timeout=60) as client:
        while len(latencies) < count or (busy is not None and busy.is_alive()):
            start = time.perf_counter()
            client.get("/healthz").raise_for_status()
            latencies.append(time.perf_counter() - start)
            time.sleep(interval)
            if busy is not None and not busy.is_alive() and len(latencies) >= 10:
                break
    return latencies


def scoring_load(service: Service, model: str, concurrency: int, seconds: float) -> tuple[int, list[float], int]:
    """Requests done, their latencies and 503s, with `concurrency` clients for `seconds` s."""
    body = {"model": model, "sentences": [lines(1, i).strip() for i in range(20)]}
    latencies: list[float] = []
    busy = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop() -> None:
        nonlocal busy
        with httpx.Client(base_url=service.url, timeout=60, headers=service.headers) as client:
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                response = client.post("/v1/score", json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 503:
                        busy += 1
                    else:
                        response.raise_for_status()
                        latencies.append(elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client_loop) for _ in range(concurrency)]:
            future.result()
    return len(latencies), latencies, busy


def training_wps(service: Service, job_id: str, seconds: float) -> float:
    """The mean of the job's reported words/s over `seconds` s (progress is updated about once a second)."""
    samples = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        progress = service.job(job_id)["progress"] or {}
        if progress.get("phase") == "train" and progress.get("wps"):
            samples.append(progress["wps"])
        time.sleep(1.0)
    return statistics.fmean(samples) if samples else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upload-mb", type=int, default=60, help="size of the large upload")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each scoring and training window")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = parser.parse_args()

    report = [
        "# Load on one machine (loopback)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()},"
        f" Python {platform.python_version()}.",
        f"Command: `.venv/bin/python bench/load.py --upload-mb {args.upload_mb} --seconds {args.seconds:g}`;"
        " the API and one worker (`python -m app run`, one torch thread), default limits.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="lstmlm-load-") as tmp_name:
        tmp = Path(tmp_name)
        service = Service(tmp / "data")
        try:
            small = service.upload(texts={"train": lines(3000, 1), "valid": lines(300, 2), "test": lines(100, 3)})
            trained = service.client.post(
                "/v1/jobs",
                json={"dataset_id": small["id"], "preset": "test", "overrides": {**TINY, "max_max_epoch": 1}},
            ).json()
            service.wait(trained["id"], ("succeeded",), timeout=300)

            # --- /healthz, idle and during a large upload ---
            idle = healthz_while(service, None, count=200, interval=0.01)
            folder = tmp / "big"
            folder.mkdir()
            big_corpus(folder / "train.txt", args.upload_mb)
            (folder / "valid.txt").write_text(lines(100, 4))
            (folder / "test.txt").write_text(lines(100, 5))
            size = sum((folder / f"{s}.txt").stat().st_size for s in ("train", "valid", "test"))
            outcome: dict[str, Any] = {}

            def upload() -> None:
                start = time.perf_counter()
                outcome["dataset"] = service.upload(folder)
                outcome["seconds"] = time.perf_counter() - start

            uploader = threading.Thread(target=upload)
            uploader.start()
            during = healthz_while(service, uploader, count=10, interval=0.02)
            uploader.join()
            report += [
                "## `/healthz` latency (p50 / p99 / max, ms)",
                "",
                "| while | requests | latency |",
                "|---|---|---|",
                f"| idle | {len(idle)} | {ms(idle)} |",
                f"| a {size / 2**20:.0f} MB upload ({outcome['dataset']['vocab_size']:,} word types) is received"
                f" and parsed, {outcome['seconds']:.1f} s | {len(during)} | {ms(during)} |",
                "",
            ]

            # --- scoring at rising concurrency ---
            report += [
                "## Scoring (20 sentences a request), tiny model",
                "",
                "| clients | requests/s | p50 / p99 / max (ms) | 503 busy |",
                "|---|---|---|---|",
            ]
            service.client.post("/v1/score", json={"model": trained["id"], "sentences": ["the cat"]})  # load it once
            for concurrency in args.concurrency:
                done, latencies, busy = scoring_load(service, trained["id"], concurrency, args.seconds)
                report.append(f"| {concurrency} | {done / args.seconds:.1f} | {ms(latencies)} | {busy} |")
            report.append("")

            # --- training words/s with and without scoring load ---
            job = service.client.post(
                "/v1/jobs",
                json={"dataset_id": small["id"], "preset": "test", "overrides": {**TINY, "max_max_epoch": 10_000}},
            ).json()
            service.wait(job["id"], ("running",), timeout=120)
            time.sleep(2)
            quiet = training_wps(service, job["id"], args.seconds)
            loaded: dict[str, float] = {}
            load = threading.Thread(
                target=lambda: loaded.update(wps=training_wps(service, job["id"], args.seconds)), daemon=True
            )
            load.start()
            scoring_load(service, trained["id"], 4, args.seconds)
            load.join()
            service.client.post(f"/v1/jobs/{job['id']}/cancel")
            report += [
                "## Training words/s (one worker, one thread)",
                "",
                "| while | words/s |",
                "|---|---|",
                f"| nothing else runs | {quiet:,.0f} |",
                f"| 4 scoring clients | {loaded.get('wps', float('nan')):,.0f} |",
                "",
            ]
        finally:
            service.stop()
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
