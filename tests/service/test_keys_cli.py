"""`python -m app keys create | list | revoke` through real subprocesses on the database a real app serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness import REPO, open_service, settings_env


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "keys", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    svc, close = open_service(tmp_path, auth=True)
    try:
        env = settings_env(svc.settings)
        created = keys_cli(env, "create", "--name", "ci runner", "--scope", "write")
        assert created.returncode == 0, created.stderr
        lines = created.stdout.rstrip("\n").split("\n")
        key = lines[-1]
        assert key.startswith("lsk_") and " " not in key and len(key) > 40  # alone on the last line
        headers = {"Authorization": f"Bearer {key}"}
        assert svc.client.get("/v1/whoami", headers=headers).json()["name"] == "ci runner"

        listed = keys_cli(env, "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if "ci runner" in line)
        key_id = row.split()[0]
        assert key_id.startswith("key_") and "write" in row and key[:12] in row
        assert row.split()[5] == "-"  # not revoked
        assert key not in listed.stdout  # never the secret

        assert keys_cli(env, "create", "--name", "x", "--scope", "root").returncode == 2  # argparse refuses
        unknown = keys_cli(env, "revoke", "key_0000000000000000")
        assert unknown.returncode == 1 and "no API key" in unknown.stderr

        revoked = keys_cli(env, "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        response = svc.client.get("/v1/whoami", headers=headers)
        assert response.status_code == 401 and "revoked" in response.json()["detail"]
        row = next(line for line in keys_cli(env, "list").stdout.splitlines() if "ci runner" in line)
        assert row.split()[5] != "-"  # the revoked column (after the two of created) holds a date
    finally:
        close()
