"""Workers on several hosts with no shared disk, each host a Linux network namespace on this machine.

A bridge in the root namespace joins three namespaces by veth pairs: `api` serves the API
(`python -m app run --workers 0`, authentication on), `host1` and `host2` each run a `python -m worker`
with its own empty data and cache folders. Everything they keep lives in PostgreSQL (a fresh schema,
reached through a TCP forwarder on the bridge, the server listening on the loopback only) and in a
SeaweedFS S3 server that listens on the bridge address. The test reaches the API over the bridge.

On the real Penn Treebank (uploaded through the API), the small preset capped at 300 steps per epoch,
2 epochs, validation and test on their first 2,000 tokens:

- a job starts on one worker host while the other trains a second job of the same config, the
  reference; as the job ends its first epoch, S3 is stopped for 20 s (the checkpoint write waits, the
  attempt goes on once S3 is back); mid epoch 2 every process of the job's host is killed with
  SIGKILL; after the lease expires the other host resumes the job from the checkpoint in S3 (the one
  written across the outage) and it ends with exactly the reference's numbers: metric histories,
  validation and test perplexities, the last checkpoint's weights, tensor for tensor;
- the dead host comes back and scores a text uninterrupted; the same text is scored again, the host
  that takes it is killed mid-way, the other host finishes it, and the two results files are equal
  byte for byte;
- no worker host has a file in its data folder afterwards, and the API host only its admin key.

Skipped unless run as root with `ip netns`, the PTB files, a PostgreSQL server and the `weed` binary.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from harness import POSTGRES_URL, REPO, postgres_schema, wait_for
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app.store.db import make_engine
from app.store.tables import Scoring

PTB_DIR = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
STEPS = 300  # training steps per epoch (the small preset: 20 x 20 words a step)
OVERRIDES: dict[str, Any] = {
    "max_max_epoch": 2,
    "max_steps_per_epoch": STEPS,
    "max_eval_tokens": 2000,
    "device": "cpu",
}
S3_AWAY_SECONDS = 20.0
SCORING_LINES = 3000  # lines of PTB's validation text scored, in chunks of CHUNK_LINES
CHUNK_LINES = 100
API_PORT = 8000
LEASE_SECONDS = 4.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ptb,
    pytest.mark.postgres,
    pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").is_file(), reason=f"no PTB corpus at {PTB_DIR}"),
]


def ip(*args: str) -> str:
    """Run `ip ARGS`; its output, or RuntimeError with its message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def why_no_namespaces() -> str | None:
    """Why network namespaces cannot be built here, or None when they can."""
    if os.geteuid() != 0:
        return "building hosts as network namespaces needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"lmprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"`ip netns` is unavailable: {exc}"
    with suppress(RuntimeError):
        ip("netns", "del", probe)
    return None


class Process:
    """A process started inside a namespace (`ip netns exec` replaces itself with the command, so
    the pid is the command's), its output in a log file."""

    def __init__(self, label: str, netns: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.label, self.log_path = label, log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]


class Host:
    """A network namespace joined to the bridge, with its own local folder and its processes."""

    def __init__(self, role: str, netns: str, address: str, root: Path) -> None:
        self.role, self.netns, self.address, self.root = role, netns, address, root
        self.processes: list[Process] = []
        root.mkdir(parents=True)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start(self, label: str, args: list[str], env: dict[str, str]) -> Process:
        process = Process(label, self.netns, args, env, self.root / f"{label}-{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        try:
            return [int(pid) for pid in ip("netns", "pids", self.netns).split()]
        except RuntimeError:
            return []

    def kill_everything(self) -> list[int]:
        """SIGKILL every process in the namespace until none is left; the pids killed."""
        killed: list[int] = []
        deadline = time.monotonic() + 30
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
            for process in self.processes:  # reap ours (a zombie is no longer in the namespace)
                if process.proc.poll() is None:
                    with suppress(subprocess.TimeoutExpired):
                        process.proc.wait(timeout=0.2)
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {pids} of {self.role} survive SIGKILL")
        for process in self.processes:
            process.proc.wait()
        return killed

    def owns(self, worker_id: str | None) -> bool:
        """Whether `worker_id` (`<hostname>-<pid>-<random>`) is a worker started on this host."""
        return worker_id is not None and any(f"-{p.pid}-" in worker_id for p in self.processes)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def remove_stale_networks() -> None:
    """Remove the namespaces and bridges an earlier run of this test left when it was killed (named
    `lm<its pid>-<role>` and `lm<its pid>br`, its pid gone)."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        found = re.fullmatch(r"lm(\d+)-(api|host1|host2)", name)
        if found and not alive(int(found.group(1))):
            for pid in ip("netns", "pids", name).split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            with suppress(RuntimeError):
                ip("netns", "del", name)
    for name in re.findall(r"^\d+: (lm\d+br)[:@]", ip("-o", "link", "show", "type", "bridge"), re.MULTILINE):
        if not alive(int(name[2:-2])):
            with suppress(RuntimeError):
                ip("link", "del", name)


class Network:
    """A bridge in the root namespace and namespaces joined to it by veth pairs; `close` removes all."""

    def __init__(self, tmp: Path) -> None:
        remove_stale_networks()
        self.tag = f"lm{os.getpid()}"
        self.subnet = f"10.231.{os.getpid() % 250}"
        self.bridge = f"{self.tag}br"
        self.gateway = f"{self.subnet}.1"
        self.tmp = tmp
        self.hosts: list[Host] = []
        ip("link", "add", "name", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, role: str) -> Host:
        index = len(self.hosts) + 1
        host = Host(role, f"{self.tag}-{role}", f"{self.subnet}.{index + 1}", self.tmp / role)
        self.hosts.append(host)
        outside, inside = f"{self.tag}v{index}", f"{self.tag}p{index}"
        ip("netns", "add", host.netns)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", host.netns)
        ip("link", "set", outside, "master", self.bridge)
        ip("link", "set", outside, "up")
        ip("-n", host.netns, "link", "set", inside, "name", "eth0")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def kill_all(self) -> None:
        for host in self.hosts:
            host.kill_everything()

    def close(self) -> None:
        self.kill_all()
        for index, host in enumerate(self.hosts, start=1):
            for args in (("netns", "del", host.netns), ("link", "del", f"{self.tag}v{index}")):
                with suppress(RuntimeError):  # the veth goes with its namespace
                    ip(*args)
        ip("link", "del", self.bridge)


class Forwarder:
    """A TCP forwarder in a thread of the test process: connections to `listen` are piped to `target`
    (PostgreSQL listens on the loopback only; the namespaces reach it on the bridge)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="pg-forwarder", daemon=True)
        self.thread.start()
        self.started.wait(10)
        if self.error is not None:
            raise RuntimeError(f"forwarder on {listen}: {self.error}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            server = self.loop.run_until_complete(asyncio.start_server(self._handle, *self.listen))
        except OSError as exc:
            self.error = exc
            self.started.set()
            return
        self.started.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def bridged_s3(address: str) -> Any:
    """The tests' SeaweedFS server (`tests/s3server.py`), listening on `address` instead of the loopback."""
    import s3server

    class BridgedS3Server(s3server.S3Server):
        @property
        def endpoint(self) -> str:
            return f"http://{address}:{self.ports['s3']}"

        def command(self) -> list[str]:
            loopback = {"-ip=127.0.0.1": f"-ip={address}", "-ip.bind=127.0.0.1": f"-ip.bind={address}"}
            command = super().command()
            assert set(loopback) <= set(command), command
            return [loopback.get(arg, arg) for arg in command]

    return BridgedS3Server()


class Cluster:
    """The three hosts, PostgreSQL and S3 on the virtual network, the API and a client for it."""

    def __init__(self, network: Network, engine: Engine, database_url: str, s3: Any, storage_url: str) -> None:
        self.network, self.database_url, self.s3, self.storage_url = network, database_url, s3, storage_url
        self.engine = engine  # the test's own connection (on the loopback), to see which worker holds what
        self.api_host, self.host1, self.host2 = (network.add_host(role) for role in ("api", "host1", "host2"))
        self.client: httpx.Client | None = None

    def env(self, host: Host) -> dict[str, str]:
        """The environment of a service process on `host`: its own folders, the shared database and bucket."""
        proxies = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LSTMLM_", "AWS_")) and k.lower() not in proxies  # no proxy on this network
        }
        env.update(self.s3.env())
        env.update(
            {
                "LSTMLM_DATA_DIR": str(host.data_dir),
                "LSTMLM_CACHE_DIR": str(host.root / "cache"),
                "LSTMLM_DATABASE_URL": self.database_url,
                "LSTMLM_STORAGE_URL": self.storage_url,
                "LSTMLM_LEASE_SECONDS": str(LEASE_SECONDS),
                "LSTMLM_HEARTBEAT_SECONDS": "0.5",
                "LSTMLM_POLL_SECONDS": "0.2",
                "LSTMLM_TORCH_THREADS": "1",
                "LSTMLM_SCORING_CHUNK_LINES": str(CHUNK_LINES),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start_api(self) -> None:
        host = self.api_host
        api = host.start(
            "api",
            [sys.executable, "-m", "app", "run", "--host", host.address, "--port", str(API_PORT), "--workers", "0"],
            self.env(host),
        )

        def key() -> str | None:
            if api.proc.poll() is not None:
                raise AssertionError(f"the API exited with {api.proc.returncode}:\n{api.log()}")
            found = re.search(r"API key: (\S+);", api.log())
            return found.group(1) if found else None

        secret = wait_for(key, timeout=120, interval=0.2, what="the API to print its key")
        self.client = httpx.Client(
            base_url=f"http://{host.address}:{API_PORT}",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=120,
            trust_env=False,
        )

        def serving() -> bool:
            try:
                return self.api.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(serving, timeout=60, interval=0.2, what="the API to answer on the bridge")

    @property
    def api(self) -> httpx.Client:
        assert self.client is not None
        return self.client

    def start_worker(self, host: Host) -> Process:
        return host.start("worker", [sys.executable, "-m", "worker"], self.env(host))

    def logs(self) -> str:
        return "\n".join(
            f"--- {host.role} {p.label} (pid {p.pid}, exit {p.proc.poll()})\n{p.log()}"
            for host in self.network.hosts
            for p in host.processes
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def wait(
        self, path: str, check: Callable[[dict[str, Any]], Any], timeout: float, what: str, interval: float = 0.25
    ) -> Any:
        """Poll `GET path` until `check(answer)` is truthy and return the answer; fail with the processes' logs."""

        def probe() -> Any:
            answer = self.get(path)
            return answer if check(answer) else None

        try:
            return wait_for(probe, timeout=timeout, interval=interval, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; now: {self.get(path)}\n{self.logs()}") from None

    def owner(self, worker_id: str | None) -> Host:
        owners = [host for host in (self.host1, self.host2) if host.owns(worker_id)]
        assert len(owners) == 1, f"worker {worker_id} is not one of the worker hosts'"
        return owners[0]

    def scoring_worker(self, scoring_id: str) -> str | None:
        """The worker holding a scoring (the API does not show it)."""
        with self.engine.connect() as connection:
            return connection.scalar(select(Scoring.worker_id).where(Scoring.id == scoring_id))

    def other(self, host: Host) -> Host:
        return self.host2 if host is self.host1 else self.host1

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    reason = why_no_namespaces()
    if reason is not None:
        pytest.skip(reason)
    import s3server

    try:
        s3server.weed_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with ExitStack() as stack:
        try:
            local_url = stack.enter_context(postgres_schema())
        except OperationalError as exc:
            pytest.skip(f"no PostgreSQL server at {POSTGRES_URL}: {type(exc).__name__}")
        network = Network(tmp_path)
        stack.callback(network.close)  # kills every process of every host, then removes the namespaces
        url = make_url(local_url)
        port = url.port or 5432
        forwarder = Forwarder((network.gateway, port), (url.host or "127.0.0.1", port))
        stack.callback(forwarder.close)
        s3 = bridged_s3(network.gateway)
        stack.callback(s3.close)
        s3.start()
        bucket = s3.new_bucket("lstmlm-hosts")
        database_url = url.set(host=network.gateway).render_as_string(hide_password=False)
        engine = make_engine(local_url, poolclass=NullPool)
        stack.callback(engine.dispose)
        built = Cluster(network, engine, database_url, s3, f"s3://{bucket}/service")
        stack.callback(built.close)
        stack.callback(network.kill_all)  # first of all: no process outlives the test
        built.start_api()
        yield built


def numbers(cluster: Cluster, job_id: str) -> dict[str, Any]:
    """What a run computed: its metric histories (but speed), perplexities and final weights."""
    job = cluster.get(f"/v1/jobs/{job_id}")
    keys = ["train_ppl", "valid_ppl", "train_ppl_running", "lr"]
    metrics = cluster.get(f"/v1/jobs/{job_id}/metrics", key=keys, limit=10_000)["metrics"]
    history = sorted((m["key"], m["step"], m["value"]) for m in metrics)
    checkpoints = cluster.get(f"/v1/jobs/{job_id}/checkpoints")["items"]
    last = checkpoints[-1]
    response = cluster.api.get(f"/v1/jobs/{job_id}/checkpoints/{last['id']}/file")
    assert response.status_code == 200, response.text
    payload = torch.load(io.BytesIO(response.content), map_location="cpu", weights_only=True)
    return {
        "config": job["config"],
        "test_ppl": job["test_ppl"],
        "valid_ppl": (job["latest_valid_ppl"], job["best_valid_ppl"]),
        "history": history,
        "last_checkpoint": (last["epoch"], last["step"], last["kind"], last["valid_ppl"]),
        "vocab": payload["vocab"],
        "weights": payload["model"],
    }


def test_a_worker_host_dies_and_s3_stops_yet_jobs_end_with_the_numbers_of_uninterrupted_runs(
    cluster: Cluster,
) -> None:
    files = {
        split: (f"{split}.txt", (PTB_DIR / f"ptb.{split}.txt").read_bytes(), "text/plain")
        for split in ("train", "valid", "test")
    }
    # Both worker hosts start (and wait for work) while PTB is uploaded; either may claim the job.
    workers = {host.role: cluster.start_worker(host) for host in (cluster.host1, cluster.host2)}
    # PTB's own tokens, as its detected tokenizer (ptb) reads them (tests/service/test_ptb.py), without
    # the detection's pass over its 5 MB
    uploaded = cluster.api.post("/v1/datasets", files=files, data={"name": "ptb", "tokenizer": "whitespace"})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["vocab_size"] == 10_000
    body = {"dataset_id": dataset["id"], "preset": "small", "overrides": OVERRIDES}

    # The job starts on whichever worker host claims it first; the other host runs the reference.
    job_id = cluster.api.post("/v1/jobs", json={**body, "name": "interrupted"}).json()["id"]
    claimed = cluster.wait(f"/v1/jobs/{job_id}", lambda j: j["worker_id"], 120, "a worker host to claim the job")
    doomed = cluster.owner(claimed["worker_id"])
    survivor = cluster.other(doomed)
    reference_id = cluster.api.post("/v1/jobs", json={**body, "name": "reference"}).json()["id"]
    running = cluster.wait(f"/v1/jobs/{reference_id}", lambda j: j["worker_id"], 60, "the reference to start")
    assert survivor.owns(running["worker_id"])

    # S3 goes away for 20 s as the job ends its first epoch: its checkpoint write waits for S3.
    def near_end_of_epoch_1(job: dict[str, Any]) -> bool:
        p = job["progress"] or {}
        return bool(p.get("epoch") == 1 and p.get("phase") == "train" and p.get("step", 0) >= STEPS - 25)

    cluster.wait(f"/v1/jobs/{job_id}", near_end_of_epoch_1, 300, "the end of the job's first epoch")
    cluster.s3.stop()
    s3_stopped = time.monotonic()
    during: list[dict[str, Any]] = []
    while time.monotonic() - s3_stopped < S3_AWAY_SECONDS:
        job = cluster.get(f"/v1/jobs/{job_id}")
        during.append(job["progress"] or {})
        assert job["status"] == "running" and job["attempt"] == 1, job
        assert cluster.get(f"/v1/jobs/{job_id}/checkpoints")["items"] == []
        time.sleep(0.2)
    cluster.s3.start()
    # its validation ended while S3 was away: the epoch's checkpoint was being written into the outage
    assert any(p.get("phase") == "validate" and p.get("step") == p.get("steps") for p in during), during

    def checkpointed(job: dict[str, Any]) -> bool:
        return bool(cluster.get(f"/v1/jobs/{job_id}/checkpoints")["items"])

    cluster.wait(f"/v1/jobs/{job_id}", checkpointed, 180, "the epoch-1 checkpoint once S3 is back")
    (first_checkpoint,) = cluster.get(f"/v1/jobs/{job_id}/checkpoints")["items"]
    assert (first_checkpoint["epoch"], first_checkpoint["attempt"]) == (1, 1)

    # Mid epoch 2, every process of the job's host dies.
    def mid_epoch_2(job: dict[str, Any]) -> bool:
        assert job["attempt"] == 1 and job["status"] == "running", job  # S3's outage cost no attempt
        p = job["progress"] or {}
        return bool(p.get("epoch") == 2 and p.get("phase") == "train" and p.get("step", 0) >= STEPS // 3)

    cluster.wait(f"/v1/jobs/{job_id}", mid_epoch_2, 300, "the job to be inside epoch 2")
    killed = doomed.kill_everything()
    assert workers[doomed.role].pid in killed
    assert doomed.pids() == []
    assert cluster.get(f"/v1/jobs/{job_id}")["status"] == "running"  # nobody knows yet: its lease runs

    # The survivor ends the reference, then resumes the job from the checkpoint in S3.
    reference = cluster.wait(
        f"/v1/jobs/{reference_id}", lambda j: j["status"] in ("succeeded", "failed"), 600, "the reference to end"
    )
    assert reference["status"] == "succeeded" and reference["attempt"] == 1, reference
    resumed = cluster.wait(f"/v1/jobs/{job_id}", lambda j: j["attempt"] == 2, 120, "the job's second attempt")
    assert survivor.owns(resumed["worker_id"]), resumed

    # Meanwhile the dead host comes back (its folders as it left them) and scores a text without
    # interruption. The same text again: whichever host takes it dies mid-way, the other finishes it.
    cluster.start_worker(doomed)
    lines = (PTB_DIR / "ptb.valid.txt").read_text().splitlines()[:SCORING_LINES]
    text = ("\n".join(lines) + "\n").encode()
    ended = ("succeeded", "failed", "canceled")

    def score() -> str:
        answer = cluster.api.post(
            "/v1/scorings", data={"model": reference_id}, files={"file": ("text.txt", text, "text/plain")}
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    plain_id = score()
    plain = cluster.wait(f"/v1/scorings/{plain_id}", lambda s: s["status"] in ended, 300, "the first scoring")
    assert plain["status"] == "succeeded" and plain["attempt"] == 1, plain
    scoring_id = score()
    scoring_path = f"/v1/scorings/{scoring_id}"

    def midway(scoring: dict[str, Any]) -> bool:
        assert scoring["lines_done"] < SCORING_LINES // 2, scoring  # not past the point to kill it at
        return bool(scoring["status"] == "running" and scoring["lines_done"] >= 3 * CHUNK_LINES)

    cluster.wait(scoring_path, midway, 300, "the scoring to be under way", interval=0.05)
    scorer = cluster.owner(cluster.scoring_worker(scoring_id))
    scorer.kill_everything()
    stopped_at = cluster.get(scoring_path)["lines_done"]
    assert 0 < stopped_at < SCORING_LINES
    rescuers: set[str | None] = set()

    def rescued_and_ended(scoring: dict[str, Any]) -> bool:
        if scoring["attempt"] == 2 and scoring["status"] == "running":
            rescuers.add(cluster.scoring_worker(scoring_id))
        return scoring["status"] in ended

    rescued = cluster.wait(scoring_path, rescued_and_ended, 300, "the scoring to end", interval=0.1)
    assert rescued["status"] == "succeeded" and rescued["attempt"] == 2, rescued
    assert rescued["lines_done"] == SCORING_LINES
    found = {worker for worker in rescuers if worker is not None}
    assert found and all(cluster.other(scorer).owns(worker) for worker in found), rescuers
    results = cluster.api.get(f"{scoring_path}/results")
    assert results.status_code == 200
    assert len(results.content.splitlines()) == SCORING_LINES
    assert results.content == cluster.api.get(f"/v1/scorings/{plain_id}/results").content

    # The job: resumed on the other host from the epoch-1 checkpoint written across the S3 outage,
    # with exactly the reference's numbers.
    done = cluster.wait(f"/v1/jobs/{job_id}", lambda j: j["status"] in ended, 600, "the job to end")
    assert done["status"] == "succeeded" and done["attempt"] == 2 and done["error"] is None, done
    assert survivor.owns(done["worker_id"])
    messages = [line["message"] for line in cluster.get(f"/v1/jobs/{job_id}/logs", limit=1000)["items"]]
    assert any(
        m.startswith("attempt 2 of") and f"resuming from checkpoint {first_checkpoint['id']}" in m for m in messages
    ), messages
    ours, theirs = numbers(cluster, job_id), numbers(cluster, reference_id)
    assert ours["config"] == theirs["config"] and ours["config"]["hidden_size"] == 200
    assert ours["test_ppl"] == theirs["test_ppl"] and ours["test_ppl"] is not None
    assert ours["valid_ppl"] == theirs["valid_ppl"]
    assert [h for h in ours["history"] if h[0] == "valid_ppl"] == [h for h in theirs["history"] if h[0] == "valid_ppl"]
    assert len([h for h in ours["history"] if h[0] == "train_ppl"]) == 2
    assert ours["history"] == theirs["history"]
    assert ours["last_checkpoint"] == theirs["last_checkpoint"]
    assert ours["vocab"] == theirs["vocab"]
    assert ours["weights"].keys() == theirs["weights"].keys()
    for name, tensor in ours["weights"].items():
        assert torch.equal(tensor, theirs["weights"][name]), name

    # No worker host kept a file: everything is in S3 and PostgreSQL.
    for host in (cluster.host1, cluster.host2):
        kept = sorted(str(p.relative_to(host.data_dir)) for p in host.data_dir.rglob("*") if not p.is_dir())
        assert kept == [], f"{host.role} kept {kept}"
    api_files = sorted(p.name for p in cluster.api_host.data_dir.rglob("*") if not p.is_dir())
    assert api_files == ["admin.key"]  # the first key `app run` made; datasets went to S3
