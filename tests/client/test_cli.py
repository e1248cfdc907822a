"""`lstm-lm` against a live server (`python -m app run` on a free port, with a worker): every
command through the real client package in a subprocess, its output and its exit code."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import torch
from harness import wait_for
from service.test_serve import free_port

from .conftest import EPOCHS, Server, sets


def test_console_script_is_installed() -> None:
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("lstm-lm") == "client.cli:main"


def test_watch_follows_the_job_to_success(trained: dict[str, Any]) -> None:
    watched = trained["watch"]
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = watched.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "valid ppl" in line)
    rows = [line.split() for line in lines[header + 1 : header + 1 + EPOCHS]]
    assert [row[0] for row in rows] == [str(e) for e in range(1, EPOCHS + 1)]
    assert [float(row[1]) for row in rows] == [1.0, 0.5]  # the lr schedule of the test preset
    assert lines[-1].startswith(f"job {trained['job']['id']} succeeded: test perplexity ")


def test_metrics_as_csv(server: Server, trained: dict[str, Any]) -> None:
    text = server.ok("metrics", trained["job"]["id"], "--csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert set(rows[0]) == {"key", "step", "value", "timestamp"}
    valid = [r for r in rows if r["key"] == "valid_ppl"]
    assert len(valid) == EPOCHS and all(float(r["value"]) > 1 for r in valid)
    job = json.loads(server.ok("status", trained["job"]["id"], "--json"))
    assert float(valid[-1]["value"]) == job["latest_valid_ppl"]
    only = list(csv.DictReader(io.StringIO(server.ok("metrics", job["id"], "--csv", "--key", "test_ppl"))))
    assert [float(r["value"]) for r in only] == [job["test_ppl"]]


def test_score_from_stdin(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    sentences = "the cat sat on the mat\n\na big red dog ran fast\n"
    body = server.json("score", "--model", job_id, "-", stdin=sentences)
    assert len(body["sentences"]) == 2 and body["aggregate"]["num_sentences"] == 2
    table = server.ok("score", "--model", job_id, stdin=sentences)
    first = next(line for line in table.splitlines() if line.startswith("1\t"))
    assert float(first.split("\t")[1]) == pytest.approx(body["sentences"][0]["perplexity"], abs=0.01)
    assert f"corpus perplexity {body['aggregate']['corpus_perplexity']:.2f}" in table
    assert "word perplexity" in table and "bits per byte" in table


def test_upload_with_a_tokenizer_and_its_options(server: Server, trained: dict[str, Any]) -> None:
    corpus = server.folder / "corpus"
    options = ("--tokenizer", "bpe", "--tokenizer-vocab-size", "300", "--lowercase")
    done = server.cli("upload", str(corpus), "--name", "tiny-bpe", *options)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    dataset_id = lines[0].split()[1]
    bpe = server.http("GET", f"/v1/datasets/{dataset_id}").json()
    assert bpe["tokenizer"]["kind"] == "bpe" and bpe["tokenizer"]["lowercase"] is True
    assert bpe["tokenizer"]["vocab_size"] <= 300
    assert lines[1] == f"tokenizer bpe (lowercase, {bpe['tokenizer']['vocab_size']:,} pieces)"
    for split, line in zip(("train", "valid", "test"), lines[2:5], strict=True):
        stats = bpe["splits"][split]
        assert line.split()[:5] == [split, f"{stats['words']:,}", "words", f"{stats['tokens']:,}", "tokens"]
        assert line.endswith(f"unk {stats['unk']:,} ({100 * stats['unk_rate']:.2f}%)")

    words = server.json(
        "upload", str(corpus), "--name", "tiny-ws", "--tokenizer", "whitespace", "--min-count", "2", "--no-lowercase"
    )
    assert words["tokenizer"] == {"kind": "whitespace", "lowercase": False, "min_count": 2, "vocab_size": None}
    assert words["splits"]["valid"]["words"] == bpe["splits"]["valid"]["words"]  # the same raw text

    wrong = server.cli("upload", str(corpus), "--tokenizer", "letters")
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: --tokenizer is one of whitespace, ptb")


def test_score_warns_of_unknown_words_on_stderr(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    sentences = "the cat sat on the mat\nzebra giraffe okapi\n"
    done = server.cli("score", "--model", job_id, stdin=sentences)
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.splitlines()
    assert warnings and all(line.startswith("warning: ") for line in warnings)
    assert any(line.startswith("warning: sentences[1]: 3 of 4 tokens (75%) are <unk>") for line in warnings)
    assert not any("sentences[0]" in line for line in warnings)
    assert "warning" not in done.stdout
    body = server.json("score", "--model", job_id, "--pretokenized", stdin=sentences)
    assert body["pretokenized"] is True and body["warnings"][0]["sentence"] == 1
    table = next(line for line in done.stdout.splitlines() if line.startswith("2\t"))
    assert float(table.split("\t")[2]) == pytest.approx(body["sentences"][1]["word_perplexity"], abs=0.01)

    refused = server.cli("score", "--model", job_id, "--max-unk-rate", "0.5", stdin=sentences)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.splitlines()[-1].startswith("error: 422: sentences[1]: 3 of 4 tokens")


def warning_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the server's worker has a GPU, and bf16 on it")
def test_submit_warns_on_stderr_when_no_live_worker_can_run_it(
    server: Server, trained: dict[str, Any], tmp_path: Path
) -> None:
    lacks = (
        "warning: no worker that sent a heartbeat in the last 120 s offers {0}: "
        "it waits in the queue until a worker with {0} starts"
    )
    args = ("submit", "--dataset", trained["dataset"]["id"], "--preset", "test", *sets(), "--set", "device=cuda")
    on_gpu = server.cli(*args)
    assert on_gpu.returncode == 0, on_gpu.stdout + on_gpu.stderr
    assert warning_lines(on_gpu) == [lacks.format("cuda")] and "warning" not in on_gpu.stdout
    job_id = on_gpu.stdout.split()[1].rstrip(":")
    assert on_gpu.stdout.startswith(f"job {job_id} queued: waiting for a worker with cuda")
    as_json = server.cli(*args, "--json")  # stdout stays the job's JSON
    assert warning_lines(as_json) == [lacks.format("cuda")]
    assert json.loads(as_json.stdout)["warning"] == lacks.format("cuda").removeprefix("warning: ")

    text = tmp_path / "lines.txt"
    text.write_text("the cat sat on the mat\n", encoding="utf-8")
    low = server.cli("scorings", "submit", "--model", trained["job"]["id"], str(text), "--precision", "bf16")
    assert low.returncode == 0, low.stdout + low.stderr
    assert warning_lines(low) == [lacks.format("bf16")]
    plain = server.cli("scorings", "submit", "--model", trained["job"]["id"], str(text), "--precision", "fp32")
    assert plain.returncode == 0 and warning_lines(plain) == []
    for job in (job_id, json.loads(as_json.stdout)["id"]):
        server.ok("cancel", job)
    server.ok("scorings", "cancel", low.stdout.split()[1])


def test_scorings_submit_watch_results_list_delete(server: Server, trained: dict[str, Any], tmp_path: Path) -> None:
    job_id, lines = trained["job"]["id"], 3000
    text = tmp_path / "lines.txt"
    text.write_text("the cat sat on the mat\n" * (lines - 1) + "a big red dog ran fast\n", encoding="utf-8")
    done = server.cli("scorings", "submit", "--model", job_id, str(text), "--watch", "--pretokenized")
    assert done.returncode == 0, done.stdout + done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    scoring_id = first.split()[1]
    assert first == f"scoring {scoring_id} queued: {lines:,} lines"
    body = server.json("scorings", "status", scoring_id)
    assert body["status"] == "succeeded" and body["lines_done"] == lines and body["options"]["pretokenized"] is True
    ppl = body["aggregate"]["corpus_perplexity"]
    assert last.startswith(f"scoring {scoring_id} succeeded: {lines:,}/{lines:,} lines of uploaded file with {job_id}")
    assert last.endswith(f"corpus perplexity {ppl:.2f}")

    out = tmp_path / "results.jsonl"
    assert server.ok("scorings", "results", scoring_id, "-o", str(out)).strip() == f"scoring {scoring_id} -> {out}"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, lines + 1))
    direct = server.json("score", "--model", job_id, stdin="a big red dog ran fast\n")
    assert records[-1]["total_logprob"] == pytest.approx(direct["sentences"][0]["total_logprob"], abs=1e-4)

    dataset = trained["dataset"]
    split = server.cli("scorings", "submit", "-m", job_id, "--dataset", dataset["id"], "--split", "valid", "--no-eos")
    split_id = split.stdout.split()[1]
    assert split.returncode == 0
    watched = server.json("scorings", "watch", split_id)  # --json: the finished scoring only
    assert watched["status"] == "succeeded" and watched["options"]["score_eos"] is False
    listed = server.ok("scorings", "list")
    assert scoring_id in listed and f"{dataset['id']} valid" in listed

    unknown = tmp_path / "unknown.txt"
    unknown.write_text("zebra giraffe okapi\n" * 3, encoding="utf-8")
    warned = server.cli("scorings", "submit", "--model", job_id, str(unknown), "--watch")
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "warning: in all: 9 of 12 tokens (75%) are <unk>" in warned.stderr
    warned_id = warned.stdout.split()[1]
    status = server.cli("scorings", "status", warned_id)
    assert status.stderr.startswith("warning: in all: 9 of 12 tokens (75%) are <unk>")
    assert "word perplexity " in status.stdout

    refused = server.cli("scorings", "cancel", scoring_id)  # finished: nothing to cancel
    assert refused.returncode == 1 and refused.stderr.startswith("error: 409: ")
    neither = server.cli("scorings", "submit", "-m", job_id)
    assert neither.returncode == 1 and neither.stderr.splitlines() == [
        "error: give a file to score or --dataset (with --split), not both"
    ]
    assert server.ok("scorings", "delete", scoring_id).strip() == f"scoring {scoring_id} deleted"
    gone = server.cli("scorings", "status", scoring_id)
    assert gone.returncode == 1 and gone.stderr.startswith("error: 404: ")


def test_a_failing_command_exits_non_zero_with_one_line(server: Server) -> None:
    done = server.cli("status", "job_nope")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: 404: job 'job_nope' not found"]
    bad = server.cli("submit", "--dataset", "ds_nope", "--preset", "test")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1 and "ds_nope" in bad.stderr
    gone = subprocess.run(
        [sys.executable, "-m", "client", "--url", f"http://127.0.0.1:{free_port()}", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        gone.returncode == 1 and gone.stderr.startswith("error: cannot reach ") and len(gone.stderr.splitlines()) == 1
    )


def test_logs_print_and_follow(server: Server, trained: dict[str, Any]) -> None:
    job_id = trained["job"]["id"]
    text = server.ok("logs", job_id)
    assert "starting on cpu" in text and f"Epoch: {EPOCHS} Valid Perplexity: " in text
    assert text.rstrip().endswith("succeeded")
    followed = server.ok("logs", job_id, "-f")  # a finished job: all lines, then the stream ends
    assert followed == text
    lines = [json.loads(line) for line in server.ok("logs", job_id, "--json").splitlines()]
    assert len(lines) == len(text.splitlines()) and lines[0]["level"] == "INFO"


def test_list_status_checkpoints_download_alias_generate_delete(
    server: Server, trained: dict[str, Any], tmp_path: Path
) -> None:
    job_id = trained["job"]["id"]
    assert job_id in server.ok("list", "--status", "succeeded")
    assert job_id not in server.ok("list", "--status", "queued")
    assert "succeeded" in server.ok("status", job_id)
    ckpts = server.json("checkpoints", job_id)
    assert ckpts["items"] and ckpts["best_id"] in server.ok("checkpoints", job_id)
    target = tmp_path / "best.pt"
    server.ok("download", job_id, "--best", "-o", str(target))
    best = next(c for c in ckpts["items"] if c["id"] == ckpts["best_id"])
    assert target.stat().st_size == best["size_bytes"]
    assert server.ok("alias", "tiny-model", job_id).strip() == f"alias tiny-model -> {job_id}"
    streamed = server.ok("generate", "--model", "tiny-model", "--prompt", "the cat", "--max-tokens", "5", "--seed", "3")
    whole = server.json("generate", "--model", "tiny-model", "--prompt", "the cat", "--max-tokens", "5", "--seed", "3")
    assert streamed.strip() == f"the cat {whole['choices'][0]['text'].strip()}".strip()
    # a queued job can be canceled, then deleted
    extra = server.json("submit", "-d", trained["dataset"]["id"], "-p", "test", *sets(), "--set", "max_max_epoch=500")
    assert "cancel" in server.ok("cancel", extra["id"])
    wait_for(lambda: server.json("status", extra["id"])["status"] == "canceled", timeout=60, what="cancel")
    assert server.ok("delete", extra["id"]).strip() == f"job {extra['id']} deleted"
    assert server.cli("status", extra["id"]).returncode == 1
