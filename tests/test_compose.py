"""docker-compose.yml: valid for `docker-compose config -q`, and it runs what the README says.

Needs the `docker-compose` command (Debian's package parses the file without a Docker engine);
skipped where it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(COMPOSE is None, reason="no docker-compose command")


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    # The file's own defaults, not whatever storage or database the test process is pointed at
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LSTMLM_"))}
    return subprocess.run([COMPOSE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_compose_file_validates() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_api_and_workers_share_the_data_volume_and_postgres_is_optional() -> None:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    api, worker, postgres = services["api"], services["worker"], services["postgres"]
    assert api["command"][:4] == ["python", "-m", "app", "run"]  # migrates, then serves
    assert worker["command"] == ["python", "-m", "worker"]
    assert "ports" not in worker  # workers scale with --scale: no fixed host port
    for service in (api, worker):
        assert any(str(v).startswith("data:/data") for v in service["volumes"])
        assert service["environment"]["LSTMLM_DATA_DIR"] == "/data"
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    assert postgres["profiles"] == ["postgres", "cluster"]  # started only when asked for


def test_the_cluster_profile_shares_no_volume_and_keeps_every_file_in_object_storage() -> None:
    """Profile `cluster`: PostgreSQL, SeaweedFS, an API and workers as on separate machines."""
    result = compose("--profile", "cluster", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    cluster = ("postgres", "seaweedfs", "cluster-api", "cluster-worker")
    users: dict[str, list[str]] = {}
    for name in cluster:
        assert "cluster" in services[name]["profiles"]
        for volume in services[name].get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            users.setdefault(source, []).append(name)
    assert all(len(names) == 1 for names in users.values()), users  # no volume is shared
    api, worker = services["cluster-api"], services["cluster-worker"]
    for service in (api, worker):
        assert "volumes" not in service  # nothing of theirs outlives the container but in PostgreSQL and S3
        env = service["environment"]
        assert env["LSTMLM_STORAGE_URL"].startswith("s3://")
        assert (
            env["LSTMLM_DATABASE_URL"].startswith("postgresql+psycopg://")
            and "@postgres:" in env["LSTMLM_DATABASE_URL"]
        )
        assert env["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert "python -m app storage create" in " ".join(api["command"])  # the bucket, before serving
    assert {name: dep["condition"] for name, dep in api["depends_on"].items()} == {
        "postgres": "service_healthy",
        "seaweedfs": "service_healthy",
    }
    assert worker["command"] == ["python", "-m", "worker"] and "ports" not in worker
