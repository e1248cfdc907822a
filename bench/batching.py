"""Many clients at once, on loopback only: what cross-request batching of `/v1/score` and continuous
batching of generation give, measured in one run against one server.

Serves the small preset over the PTB vocabulary (a given checkpoint, or random weights) with
`uvicorn` in a subprocess, then, each phase bounded in count and time:

1. one client sends single-sentence `/v1/score` requests one after another (requests/s, p99);
2. 32 concurrent clients send single-sentence requests (requests/s, p99, 503 answers; a client
   that gets a 503 waits its `Retry-After` and tries again);
3. one greedy stream of `--tokens` tokens alone, then 16 such streams at once (tokens/s);
4. 64 concurrent requests of 20 sentences each, sent once: how many get 200 without a retry.

Phases 1-3 run `--rounds` times in turn, so that a slow second of the machine does not decide a
ratio: rates are medians over the rounds, with the lowest and highest ratio of one round.

Sentences are PTB test lines sent with `pretokenized: true` (the tokens as given), so the numbers
measure the batching, not the tokenizer. Every phase sends its requests with the standard library's
`http.client` (one keep-alive connection per scoring client, one connection per stream), the same
code for one client and for many: on two cores the clients share the server's CPUs, and a heavier
client library would measure itself as much as the server (16 streams read with `httpx` took a
whole core of the client process and less than two thirds of one in the server). Nothing is
asserted; a Markdown report is printed (and written to `--out`).

    .venv/bin/python bench/batching.py --out /tmp/batching.md
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from serving import JOB_ID, PTB_DIR, checkpoint_file, prepare_service, serve

os.environ.setdefault("PYTHONWARNINGS", "ignore")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def connect(url: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to the server at `url` (opened at its first request)."""
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


class ScoreClient:
    """One client's keep-alive HTTP/1.1 connection, sending `/v1/score` requests one after another."""

    def __init__(self, url: str, timeout: float = 120) -> None:
        self.connection = connect(url, timeout)

    def score(self, sentences: list[str]) -> tuple[int, float]:
        """Send one request; its status and its Retry-After (seconds, 1 when absent)."""
        body = json.dumps({"model": JOB_ID, "sentences": sentences, "pretokenized": True})
        self.connection.request("POST", "/v1/score", body, {"content-type": "application/json"})
        response = self.connection.getresponse()
        response.read()
        return response.status, float(response.headers.get("retry-after") or 1)

    def __enter__(self) -> ScoreClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.connection.close()


def check(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"/v1/score answered {status}")


def sequential(url: str, lines: list[str], count: int) -> tuple[float, list[float]]:
    latencies = []
    with ScoreClient(url) as client:
        check(client.score(lines[:1])[0])  # the model loaded
        start = time.perf_counter()
        for i in range(count):
            began = time.perf_counter()
            check(client.score([lines[i % len(lines)]])[0])
            latencies.append(time.perf_counter() - began)
        return count / (time.perf_counter() - start), latencies


def concurrent_singles(url: str, lines: list[str], clients: int, total: int) -> tuple[float, list[float], int]:
    """`clients` threads share `total` single-sentence requests; 503s are retried after Retry-After."""
    latencies: list[float] = []
    busy = 0
    taken = 0
    lock = threading.Lock()

    def client_loop() -> None:
        nonlocal busy, taken
        with ScoreClient(url) as client:
            while True:
                with lock:
                    if taken >= total:
                        return
                    i = taken
                    taken += 1
                began = time.perf_counter()
                while True:
                    status, retry_after = client.score([lines[i % len(lines)]])
                    if status != 503:
                        check(status)
                        break
                    with lock:
                        busy += 1
                    time.sleep(retry_after)
                with lock:
                    latencies.append(time.perf_counter() - began)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    return total / (time.perf_counter() - start), latencies, busy


def burst(url: str, lines: list[str], requests: int, size: int) -> tuple[dict[int, int], float]:
    """`requests` requests of `size` sentences, all at once, each sent once: answers by status."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send(i: int) -> None:
        with ScoreClient(url) as client:
            batch = [lines[(i * size + j) % len(lines)] for j in range(size)]
            status, _ = client.score(batch)
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        list(pool.map(send, range(requests)))
    return statuses, time.perf_counter() - start


def stream_tokens(url: str, tokens: int, prompt: str) -> int:
    """One greedy stream of `tokens` tokens, read event by event; the tokens it carried."""
    body = {"model": JOB_ID, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
    body["pretokenized"] = True
    connection = connect(url, 300)
    try:
        connection.request("POST", "/v1/generate", json.dumps(body), {"content-type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"/v1/generate answered {response.status}")
        count = 0
        for line in response:  # chunked transfer, one `data:` line per event
            if line.startswith(b"data: {"):
                event = json.loads(line.removeprefix(b"data: "))
                count += sum(1 for c in event.get("choices", []) if c.get("token"))
        return count
    finally:
        connection.close()


def streams(url: str, count: int, tokens: int, prompts: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        produced = sum(pool.map(lambda i: stream_tokens(url, tokens, prompts[i % len(prompts)]), range(count)))
    return produced / (time.perf_counter() - start), produced


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: random weights)")
    parser.add_argument("--requests", type=int, default=200, help="single-sentence requests of phase 1")
    parser.add_argument("--concurrent-requests", type=int, default=1000, help="requests of phase 2, all clients")
    parser.add_argument("--rounds", type=int, default=5, help="times phases 1, 2 and the stream phases run, in turn")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per generated stream")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="the server's torch threads (OMP_NUM_THREADS; default: torch's own, one per core)",
    )
    parser.add_argument("--out", type=Path, help="also write the report here")
    args = parser.parse_args()
    if not (PTB_DIR / "ptb.test.txt").is_file():
        print(f"no PTB corpus at {PTB_DIR}", file=sys.stderr)
        return 2
    lines = [line.strip() for line in (PTB_DIR / "ptb.test.txt").read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="batching-bench-") as tmp:
        folder = Path(tmp)
        checkpoint = checkpoint_file(args.checkpoint, PTB_DIR, folder)
        prepare_service(folder / "data", checkpoint)
        with serve(folder / "data", threads=args.torch_threads) as url:
            prompts = [" ".join(line.split()[:3]) for line in lines[:16]]
            # Phases 1-2 and the two stream phases in turn, `--rounds` times: each ratio is one of
            # medians over rounds, and its spread is the lowest and highest ratio of one round.
            seq: list[float] = []
            conc: list[float] = []
            one: list[float] = []
            many: list[float] = []
            seq_lat: list[float] = []
            conc_lat: list[float] = []
            busy = produced = 0
            for _ in range(args.rounds):
                rps, latencies = sequential(url, lines, args.requests)
                seq.append(rps)
                seq_lat += latencies
                rps, latencies, refused = concurrent_singles(url, lines, 32, args.concurrent_requests)
                conc.append(rps)
                conc_lat += latencies
                busy += refused
                one.append(streams(url, 1, args.tokens, prompts)[0])
                tps, tokens = streams(url, 16, args.tokens, prompts)
                many.append(tps)
                produced += tokens
            statuses, burst_seconds = burst(url, lines, 64, 20)
    seq_rps, conc_rps = statistics.median(seq), statistics.median(conc)
    one_tps, many_tps = statistics.median(one), statistics.median(many)
    score_ratios = [c / s for c, s in zip(conc, seq, strict=True)]
    stream_ratios = [m / o for m, o in zip(many, one, strict=True)]

    report = [
        "## Many clients at once: cross-request batching (`bench/batching.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()} ({os.cpu_count()} cores), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}. Small preset "
        f"over the PTB vocabulary ({'trained checkpoint' if args.checkpoint else 'random weights'}), one server "
        f"process ({args.torch_threads or 'default'} torch threads), PTB test lines sent pretokenized.",
        "Command: `.venv/bin/python bench/batching.py"
        + (f" --torch-threads {args.torch_threads}`" if args.torch_threads else "`"),
        "",
        f"Each phase ran {args.rounds} times, in turn with the others; rates are medians over those rounds, "
        "ratios are of the medians (in brackets: the lowest and highest ratio of one round).",
        "",
        "| load | result |",
        "|---|---|",
        f"| {args.requests} single-sentence `/v1/score` requests, one client, one after another | "
        f"{seq_rps:.1f} requests/s ({min(seq):.1f}-{max(seq):.1f}), p99 {percentile(seq_lat, 99) * 1000:.0f} ms |",
        f"| {args.concurrent_requests} single-sentence requests from 32 concurrent clients that obey `Retry-After` | "
        f"**{conc_rps:.1f} requests/s, {conc_rps / seq_rps:.2f}x** ({min(score_ratios):.2f}-{max(score_ratios):.2f}x), "
        f"p50 {statistics.median(conc_lat) * 1000:.0f} ms, p99 {percentile(conc_lat, 99) * 1000:.0f} ms, "
        f"{busy} answers 503 |",
        "| 64 concurrent requests of 20 sentences, each sent once | "
        + ", ".join(f"{n} answered {s}" for s, n in sorted(statuses.items()))
        + f" in {burst_seconds:.1f} s ({64 * 20 / burst_seconds:.0f} sentences/s) |",
        f"| one greedy stream of {args.tokens} tokens | {one_tps:.0f} tokens/s ({min(one):.0f}-{max(one):.0f}) |",
        f"| 16 concurrent greedy streams of {args.tokens} tokens | **{many_tps:.0f} tokens/s in all, "
        f"{many_tps / one_tps:.2f}x** ({min(stream_ratios):.2f}-{max(stream_ratios):.2f}x), {produced} tokens |",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
