"""What the CLI prints: tab-separated rows with whole ids in a pipe (a header line, then a row per
item), tables in an 80-column terminal that drop columns rather than cut an id, sizes in binary
units, the version, and `submit --help` with every config field and the presets' values."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from typing import Any

from rich.cells import cell_len

from .conftest import Server, clean_env


def test_list_in_a_pipe_is_a_header_then_tab_separated_rows_with_whole_ids(
    server: Server, trained: dict[str, Any]
) -> None:
    text = server.ok("list")
    header, *rows = text.splitlines()
    assert header.split("\t")[:3] == ["job", "name", "status"]
    assert {"hidden", "layers", "steps cap", "best valid", "test"} <= set(header.split("\t"))
    jobs = server.http("GET", "/v1/jobs", params={"limit": 20}).json()["items"]
    assert [row.split("\t")[0] for row in rows] == [job["id"] for job in jobs]
    assert all(len(row.split("\t")) == len(header.split("\t")) for row in rows)
    mine = next(row.split("\t") for row in rows if row.startswith(trained["job"]["id"]))
    columns = dict(zip(header.split("\t"), mine, strict=True))
    config = trained["watch_job"]["config"]
    assert columns["hidden"] == "16" and columns["layers"] == str(config["num_layers"]) and columns["preset"] == "test"
    assert columns["dataset"] == trained["dataset"]["id"]
    assert columns["best valid"] == f"{trained['watch_job']['best_valid_ppl']:.2f}"

    # the README's pipeline: the second line's first field is a whole id that other commands take
    script = f"{sys.executable} -m client --url {server.url} list --status succeeded"
    script += f" | awk 'NR==2{{print $1}}' | xargs {sys.executable} -m client --url {server.url} status"
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script], cwd=server.folder, env=clean_env(), capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("job       job_") and "succeeded" in piped.stdout.splitlines()[0]


def test_tables_in_an_80_column_terminal_keep_every_id_whole(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    shown = server.terminal("list")
    lines = shown.splitlines()
    assert all(cell_len(line) <= 80 for line in lines), shown
    assert "…" not in shown and "..." not in shown
    ids = [job["id"] for job in server.http("GET", "/v1/jobs", params={"limit": 20}).json()["items"]]
    assert ids and all(any(line.split()[0] == i for line in lines if line.split()) for i in ids), shown
    header = lines[0].split()
    assert header[0] == "job" and "status" in header and "test" in header  # the columns that always stay
    assert "tags" not in header  # dropped first at this width
    row = next(line for line in lines if line.startswith(job_id))
    assert f"{trained['watch_job']['test_ppl']:.2f}" in row

    wide = server.terminal("list", columns=250)
    assert {"hidden", "layers", "tags"} <= set(wide.splitlines()[0].split())

    checkpoints = server.http("GET", f"/v1/jobs/{job_id}/checkpoints").json()["items"]
    shown = server.terminal("checkpoints", job_id, columns=40)
    assert all(c["id"] in shown for c in checkpoints), shown
    assert all(cell_len(line) <= 40 for line in shown.splitlines())
    shown = server.terminal("datasets", "list", columns=50)
    assert trained["dataset"]["id"] in shown and "…" not in shown
    scorings = server.http("GET", "/v1/scorings", params={"limit": 20}).json()["items"]
    shown = server.terminal("scorings", "list", columns=80)
    assert all(s["id"] in shown for s in scorings) and "…" not in shown, shown
    assert all(cell_len(line) <= 80 for line in shown.splitlines())


def test_sizes_are_in_binary_units(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    header, *rows = server.ok("checkpoints", job_id).splitlines()
    sizes = [row.split("\t")[header.split("\t").index("size")] for row in rows]
    assert sizes and all(s.endswith((" KiB", " MiB", " bytes")) for s in sizes), sizes
    first = server.http("GET", f"/v1/jobs/{job_id}/checkpoints").json()["items"][0]
    number, unit = sizes[0].split()
    scale = {"bytes": 1, "KiB": 1024, "MiB": 1024**2}[unit]
    assert abs(float(number.replace(",", "")) * scale - first["size_bytes"]) <= 0.05 * scale + 1
    shown = server.ok("datasets", "show", "tiny")
    assert shown.startswith(f"dataset {trained['dataset']['id']} (tiny, upload)") and "KiB" in shown


def test_version_and_submit_help(server: Server) -> None:
    assert server.ok("--version") == f"lstm-lm {version('lstm-lm-service')}\n"
    group = server.cli("datasets")  # a group without its command: its help, nothing on stderr
    assert group.returncode == 2 and "delete" in group.stdout and group.stderr == ""
    presets = server.http("GET", "/v1/presets").json()
    text = server.ok("submit", "--help")
    assert f"(from the server at {server.url})" in text
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert lines["field"][2:] == [p["name"] for p in presets["presets"]]
    for field in presets["fields"]:
        row = lines[field["name"]]
        kind = "|".join(field["choices"]) if field["type"] == "choice" else field["type"]
        values = ["null" if v is None else str(v) for v in (p["config"][field["name"]] for p in presets["presets"])]
        assert " ".join(row[1 : -len(values)]) == kind + (" or null" if field["nullable"] else ""), row
        assert row[-len(values) :] == values, (field, row)
    # no server: the help says where the fields come from (the client speaks only HTTP)
    offline = subprocess.run(
        [sys.executable, "-m", "client", "--url", "http://127.0.0.1:9", "submit", "--help"],
        env=clean_env(COLUMNS="120"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 0 and "http://127.0.0.1:9 answers (set --url or LSTMLM_URL)" in " ".join(
        offline.stdout.split()
    )
    assert "--set" in offline.stdout and "Traceback" not in offline.stdout + offline.stderr
