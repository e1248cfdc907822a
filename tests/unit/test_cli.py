"""The command line (`python -m model train|score|generate`): a real two-epoch training run in a
subprocess with its checkpoints, resume from an epoch checkpoint, scoring and generation against the
result, and the exit code 2 of bad arguments and bad data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.cli import main, parse_override

from .conftest import sentence_lines, write_split_files

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-m", "model", *map(str, args)],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_prints_no_library_warnings() -> None:
    # torch warns at import when NumPy is missing; people should see only the project's own output.
    result = run_cli("score", "--help")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("usage: python -m model score")


def printed_test_ppl(stdout: str) -> float:
    found = re.findall(r"^Test Perplexity: ([0-9.]+)$", stdout, flags=re.MULTILINE)
    assert len(found) == 1, stdout
    return float(found[0])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(corpus folder, checkpoint folder, stdout) of `train --preset test` for two epochs."""
    base = tmp_path_factory.mktemp("cli")
    data = write_split_files(base / "data", sentence_lines(400, 1), sentence_lines(60, 2), sentence_lines(30, 3))
    out = base / "out"
    args: list[str | Path] = [
        "train",
        "--preset",
        "test",
        "--data",
        data,
        "--out",
        out,
        "--set",
        "max_max_epoch=2",
        "--device",
        "cpu",
    ]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return data, out, result.stdout


def test_train_prints_seed_lines_and_writes_checkpoints(trained_run: tuple[Path, Path, str]) -> None:
    _, out, stdout = trained_run
    assert printed_test_ppl(stdout) > 1.0
    for epoch in (1, 2):
        assert f"Epoch: {epoch} Learning rate: " in stdout
        assert f"Epoch: {epoch} Train Perplexity: " in stdout
        assert f"Epoch: {epoch} Valid Perplexity: " in stdout
    assert "Epoch: 3" not in stdout
    assert '"max_max_epoch": 2' in stdout  # the effective config is printed
    names = {p.name for p in out.iterdir()}
    assert {"epoch-001.pt", "epoch-002.pt", "last.pt", "best.pt"} <= names
    assert not any(name.endswith(".tmp") for name in names)


def test_resume_continues_to_the_same_result(trained_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    data, out, stdout = trained_run
    result = run_cli("train", "--resume", out / "epoch-001.pt", "--data", data, "--out", tmp_path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout and "epoch 1 step 0" in result.stdout
    assert "Epoch: 1 " not in result.stdout and "Epoch: 2 Valid Perplexity: " in result.stdout
    assert (tmp_path / "epoch-002.pt").is_file()
    assert printed_test_ppl(result.stdout) == printed_test_ppl(stdout)  # bit for bit: same printed digits


def test_no_epoch_checkpoints_keeps_last_and_best(trained_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    data, out, stdout = trained_run
    result = run_cli(
        "train", "--resume", out / "epoch-001.pt", "--data", data, "--out", tmp_path, "--device", "cpu",
        "--no-epoch-checkpoints",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "best.pt"}
    assert printed_test_ppl(result.stdout) == printed_test_ppl(stdout)


def test_score_and_generate(trained_run: tuple[Path, Path, str]) -> None:
    _, out, _ = trained_run
    scored = run_cli("score", "--checkpoint", out / "best.pt", "the cat sat", "a zebra ran", "--device", "cpu")
    assert scored.returncode == 0, scored.stderr
    lines = scored.stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].split()[1:] == ["the", "cat", "sat"]
    assert float(lines[0].split()[0]) > 1.0
    assert re.fullmatch(r"corpus perplexity [0-9.]+ over 8 tokens", lines[2])  # 3 + 3 words and 2 <eos>

    args = ["--prompt", "the cat", "--max-tokens", "5", "--seed", "3", "-n", "2"]
    generated = run_cli("generate", "--checkpoint", out / "last.pt", *args)
    assert generated.returncode == 0, generated.stderr
    continuations = generated.stdout.rstrip("\n").split("\n")
    assert len(continuations) == 2
    assert all(len(c.split()) <= 5 for c in continuations)


def test_bad_set_field_is_an_argparse_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "test", "--data", str(tmp_path), "--set", "hiden_size=3"])
    assert exc.value.code == 2
    assert "field=value" in capsys.readouterr().err


def test_bad_set_value_and_missing_data_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = write_split_files(tmp_path / "d", sentence_lines(50, 1), sentence_lines(20, 2), sentence_lines(5, 3))
    assert main(["train", "--preset", "test", "--data", str(data), "--set", "keep_prob=1.5"]) == 2
    assert "error: keep_prob" in capsys.readouterr().err
    missing = tmp_path / "no-such-corpus"
    assert main(["train", "--preset", "test", "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err


def test_parse_override_reads_json_values() -> None:
    assert parse_override("hidden_size=8") == ("hidden_size", 8)
    assert parse_override("keep_prob=0.5") == ("keep_prob", 0.5)
    assert parse_override("max_steps_per_epoch=null") == ("max_steps_per_epoch", None)
    assert parse_override("device=cpu") == ("device", "cpu")
