"""Upgrading a database the previous version wrote (migration head 0008) keeps its answers.

The old state is built as the old version left it: the schema migrated to 0008, rows with only the
columns that existed then, corpus folders on disk (PTB-form text under a server-side root,
WikiText-form and raw uploads under the data folder, one upload whose folder was deleted), a tiny
model trained for real and saved in the old checkpoint format (`lstm-lm-checkpoint/1`, without a
tokenizer; the oldest files without `text_convention`, the 0006-era ones with it), succeeded and
failed jobs, metric points, a log line and aliases. What the old server answered cannot be asked any
more, so what must be preserved is computed independently before the upgrade: the per-token
log-probabilities of PTB-form sentences straight from the checkpoint files
(`model.inference.score_sentences` on the sentences split on whitespace).

After `migrate.upgrade` to head the app serves the same database and data folder: every row is
still there, each dataset has the tokenizer its text is in and per-split numbers counted here,
`/v1/score` (through the job id, a checkpoint alias and job aliases; the model's tokenizer and
`pretokenized`) answers exactly the recorded numbers, checkpoint downloads are the same bytes, and a
new job can be submitted on the upgraded corpus. Downgrading to 0008 and upgrading again keeps it all.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import torch
from fastapi.testclient import TestClient
from harness import POSTGRES_URL, TINY, make_settings, postgres_schema
from sqlalchemy.exc import OperationalError

from app.main import create_app
from app.store import migrate
from app.store.db import make_engine
from app.training.datasets import TokenizerChoice, tokenize_corpus, vocabulary_report
from model.checkpoint import load, load_model, save, trainer_payload
from model.config import ModelConfig, preset
from model.data import SPLITS, Corpus, find_split
from model.inference import score_sentences
from model.train import Callbacks, EpochResult, Trainer

torch.set_num_threads(1)

OLD_HEAD = "0008"
OLD_FORMAT = "lstm-lm-checkpoint/1"
T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

# The four tables the old version wrote that this test fills, with the columns they had at 0008
# (0001; owner_id and deleted_at from 0002; requirements, run_after and estimate from 0004;
# convention and vocabulary from 0006).
OLD = sa.MetaData()
DATASETS = sa.Table(
    "datasets",
    OLD,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("source", sa.String(20)),
    sa.Column("path", sa.Text),
    sa.Column("train_tokens", sa.Integer),
    sa.Column("valid_tokens", sa.Integer),
    sa.Column("test_tokens", sa.Integer),
    sa.Column("vocab_size", sa.Integer),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("owner_id", sa.String(40)),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("convention", sa.String(20)),
)
JOBS = sa.Table(
    "jobs",
    OLD,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("status", sa.String(20)),
    sa.Column("preset", sa.String(20)),
    sa.Column("overrides", sa.JSON),
    sa.Column("config", sa.JSON),
    sa.Column("dataset_id", sa.String(40)),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("attempt", sa.Integer),
    sa.Column("max_attempts", sa.Integer),
    sa.Column("worker_id", sa.String(100)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("progress", sa.JSON),
    sa.Column("latest_train_ppl", sa.Float),
    sa.Column("latest_valid_ppl", sa.Float),
    sa.Column("best_valid_ppl", sa.Float),
    sa.Column("test_ppl", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    sa.Column("owner_id", sa.String(40)),
    sa.Column("requirements", sa.JSON),
    sa.Column("run_after", sa.DateTime(timezone=True)),
    sa.Column("estimate", sa.JSON),
    sa.Column("vocabulary", sa.JSON),
)
CHECKPOINTS = sa.Table(
    "checkpoints",
    OLD,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40)),
    sa.Column("epoch", sa.Integer),
    sa.Column("step", sa.Integer),
    sa.Column("kind", sa.String(20)),
    sa.Column("valid_ppl", sa.Float),
    sa.Column("path", sa.Text),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("attempt", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("owner_id", sa.String(40)),
)
ALIASES = sa.Table(
    "model_aliases",
    OLD,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("target", sa.String(40)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)
METRICS = sa.Table(
    "metrics",
    OLD,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40)),
    sa.Column("key", sa.String(50)),
    sa.Column("value", sa.Float),
    sa.Column("step", sa.Integer),
    sa.Column("epoch", sa.Integer),
    sa.Column("timestamp", sa.BigInteger),
    sa.Column("attempt", sa.Integer),
)
JOB_LOGS = sa.Table(
    "job_logs",
    OLD,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40)),
    sa.Column("attempt", sa.Integer),
    sa.Column("worker_id", sa.String(100)),
    sa.Column("level", sa.String(10)),
    sa.Column("message", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)

# --- corpora: PTB's form, WikiText's form and raw text ---

PTB_WORDS = ("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "big", "red", "N", "<unk>", "$", "'s")
PTB_PATTERNS = ("the cat sat on the mat", "a big dog ran fast", "the red cat 's mat", "$ N N")


def ptb_lines(count: int, seed: int) -> list[str]:
    """Lower case, `N` for numbers, `<unk>` in the text, `'s` and `$` split off: PTB's form."""
    rng = random.Random(seed)
    return [
        rng.choice(PTB_PATTERNS) if i % 2 else " ".join(rng.choice(PTB_WORDS) for _ in range(rng.randint(3, 8)))
        for i in range(count)
    ]


PTB_SPLITS = {
    "train": ptb_lines(300, 1),
    "valid": [*ptb_lines(40, 2), "the zebra sat on the mat"],  # `zebra`: not in the training text
    "test": ptb_lines(20, 3),
}
WIKITEXT_SPLITS = {
    "train": [
        " = Valkyria Chronicles III = ",
        "",
        " The state @-@ of @-@ the @-@ art game sold 1 @,@ 000 copies in 2011 , up 3 @.@ 5 % . ",
        " It isn 't known who made it . ",
    ]
    * 5,
    "valid": [" The game @-@ play is fast . ", " Sales rose 2 @.@ 5 % in 2012 . "],
    "test": [" = = Plot = = ", " The Valkyria return . "],
}
RAW_SPLITS = {
    "train": [
        "The Cat sat on the mat, at 3 o'clock.",
        "A big dog ran 1,000 metres -- fast!",
        "  Café society met   in 1999.\t",
        "",
        'She said: "don\'t" (twice).',
    ]
    * 4,
    # Saved with a byte-order mark and "\r\n" line ends (see `write_split_files`): the mark stays
    # on the first word as the training reader reads it, so these start with an unknown word.
    "valid": ["Zürich is 42 km away.", "The dog sat."],
    "test": ["Dogs ran fast; the end."],
}

# PTB-form sentences the old server scored: what the upgraded one must answer exactly as before.
SENTENCES = [
    "the cat sat on the mat",
    "a big dog ran N N fast",
    "the <unk> cat ran on the red mat",
    "the zebra sat on N",  # an unknown word: <unk>
    "the red cat 's mat",
    "$ N N",
    "",  # a blank line: its <eos>
]


def write_split_files(
    folder: Path, splits: dict[str, list[str]], names: str = "{split}.txt", crlf: tuple[str, ...] = ()
) -> Path:
    """One file per split, lines ended by "\\n" (the `crlf` splits as a Windows editor saves them: a
    byte-order mark, then lines ended by "\\r\\n")."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in splits.items():
        start, end = ("\ufeff", "\r\n") if split in crlf else ("", "\n")
        text = start + "".join(f"{line}{end}" for line in lines)
        (folder / names.format(split=split)).write_bytes(text.encode())
    return folder


def counted(splits: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """The per-split numbers counted here: whitespace words per line, UTF-8 bytes of the lines
    without their line ends, one <eos> per line; <unk> in the text or unknown to the training text."""
    train_words = Counter(word for line in splits["train"] for word in line.split())
    vocab = {*train_words, "<eos>", "<unk>"}
    numbers = {}
    for split, lines in splits.items():
        words = sum(len(line.split()) for line in lines)
        tokens = words + len(lines)
        if split == "train":
            unk = train_words["<unk>"]
        else:
            unk = sum(1 for line in lines for word in line.split() if word == "<unk>" or word not in vocab)
        numbers[split] = {
            "tokens": tokens,
            "words": words,
            "bytes": sum(len(line.encode("utf-8")) for line in lines),
            "lines": len(lines),
            "unk": unk,
            "unk_rate": unk / tokens,
        }
    return numbers


# --- the model, trained once, in the old checkpoint format ---


@dataclass(frozen=True)
class OldCheckpoints:
    """Format-1 files of one tiny training run: per epoch, without text_convention (the oldest
    files) and with `text_convention: plain` (what the 0006-era worker wrote for a dataset
    registered before conventions); and the epochs' validation perplexities."""

    oldest: list[bytes]
    plain: list[bytes]
    valid_ppl: list[float]
    config: ModelConfig


class SaveOldFormat(Callbacks):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.oldest: list[bytes] = []
        self.plain: list[bytes] = []
        self.valid: list[float] = []

    def on_epoch(self, result: EpochResult, trainer: Trainer) -> None:
        payload = trainer_payload(trainer)
        del payload["tokenizer"]  # format 1 had none
        payload["format"] = OLD_FORMAT
        path = save(payload, self.folder / f"oldest-{result.epoch}.pt")
        self.oldest.append(path.read_bytes())
        path = save({"text_convention": "plain", **payload}, self.folder / f"plain-{result.epoch}.pt")
        self.plain.append(path.read_bytes())
        self.valid.append(result.valid_ppl)


@pytest.fixture(scope="module")
def old_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> OldCheckpoints:
    root = tmp_path_factory.mktemp("old-run")
    corpus = write_split_files(root / "ptb", PTB_SPLITS, "ptb.{split}.txt")
    config = preset("test", hidden_size=16, num_steps=5, batch_size=4, max_epoch=1, max_max_epoch=2, device="cpu")
    callbacks = SaveOldFormat(root / "run")
    Trainer(config, Corpus.load(corpus)).fit(callbacks)
    assert len(callbacks.oldest) == 2
    return OldCheckpoints(callbacks.oldest, callbacks.plain, callbacks.valid, config)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema on the PostgreSQL server (skipped without one)."""
    if request.param == "sqlite":
        (tmp_path / "data").mkdir()
        yield f"sqlite:///{tmp_path / 'data' / 'service.db'}"
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_schema())
        except OperationalError as exc:
            pytest.skip(f"no PostgreSQL server at {POSTGRES_URL}: {type(exc).__name__}")
        yield url


# --- the old state ---


@dataclass
class OldState:
    best: str  # the checkpoint job_old serves: its lowest validation perplexity
    files: dict[str, bytes]  # checkpoint id -> the file's bytes
    expected: dict[str, list[list[float]]]  # checkpoint id -> per sentence, the log-probabilities


def write_old_state(engine: sa.Engine, root: Path, data: Path, run: OldCheckpoints) -> OldState:
    """Rows and files as the 0008-era service left them."""
    datasets_dir, checkpoints_dir = data / "datasets", data / "checkpoints"
    ptb = write_split_files(root / "corpora" / "ptb", PTB_SPLITS, "ptb.{split}.txt")  # a server-side root
    wiki = write_split_files(datasets_dir / "ds_wiki", WIKITEXT_SPLITS)
    raw = write_split_files(datasets_dir / "ds_raw", RAW_SPLITS, crlf=("valid", "test"))
    gone = write_split_files(datasets_dir / "ds_gone", PTB_SPLITS)
    sizes = {folder: sum(f.stat().st_size for f in folder.iterdir()) for folder in (ptb, wiki, raw, gone)}
    shutil.rmtree(gone)  # its files were removed by hand: the row remains

    def dataset(id_: str, name: str, source: str, path: Path, splits: dict[str, list[str]], convention: str) -> dict:
        numbers = counted(splits)
        vocab = {w for line in splits["train"] for w in line.split()} | {"<eos>", "<unk>"}
        return {
            "id": id_,
            "name": name,
            "source": source,
            "path": str(path),
            "train_tokens": numbers["train"]["tokens"],
            "valid_tokens": numbers["valid"]["tokens"],
            "test_tokens": numbers["test"]["tokens"],
            "vocab_size": len(vocab),
            "size_bytes": sizes[path],
            "created_at": T0,
            "owner_id": None,
            "deleted_at": None,
            "convention": convention,
        }

    best = min(range(len(run.valid_ppl)), key=lambda i: run.valid_ppl[i])

    def job(id_: str, dataset_id: str, status: str, minute: int, **fields: Any) -> dict:
        values = {
            "id": id_,
            "status": status,
            "preset": "test",
            "overrides": {"hidden_size": 16, "num_steps": 5, "batch_size": 4, "max_max_epoch": 2, "device": "cpu"},
            "config": run.config.to_dict(),
            "dataset_id": dataset_id,
            "idempotency_key": None,
            "attempt": 1,
            "max_attempts": 3,
            "worker_id": "host:123",
            "lease_expires_at": None,
            "progress": {"epoch": 2, "step": 40, "steps": 40, "fraction": 1.0},
            "latest_train_ppl": None,
            "latest_valid_ppl": None,
            "best_valid_ppl": None,
            "test_ppl": None,
            "error": None,
            "created_at": T0 + timedelta(minutes=minute),
            "started_at": T0 + timedelta(minutes=minute, seconds=1),
            "finished_at": T0 + timedelta(minutes=minute, seconds=30),
            "updated_at": T0 + timedelta(minutes=minute, seconds=30),
            "owner_id": None,
            "requirements": ["cpu"],
            "run_after": None,
            "estimate": {"steps_per_epoch": 20, "step_seconds": 0.01, "epoch_seconds": 0.2},
            "vocabulary": None,
        }
        values.update(fields)
        return values

    succeeded = {
        "latest_train_ppl": 12.5,
        "latest_valid_ppl": run.valid_ppl[-1],
        "best_valid_ppl": run.valid_ppl[best],
        "test_ppl": 13.25,
    }
    vocabulary = vocabulary_report(Corpus.load(ptb), None)  # what a 0006-era worker recorded
    checkpoints: list[dict] = []
    files: dict[str, bytes] = {}

    def checkpoint(job_id: str, id_: str, epoch: int, kind: str, content: bytes, minute: int) -> None:
        path = checkpoints_dir / job_id / f"{id_}.pt"  # where a worker puts them
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        files[id_] = content
        checkpoints.append(
            {
                "id": id_,
                "job_id": job_id,
                "epoch": epoch,
                "step": 20 * epoch,
                "kind": kind,
                "valid_ppl": run.valid_ppl[epoch - 1],
                "path": str(path),
                "size_bytes": len(content),
                "attempt": 1,
                "created_at": T0 + timedelta(minutes=minute, seconds=10 * epoch),
                "owner_id": None,
            }
        )

    # job_old trained before 0006: its checkpoints name no text convention. job_plain trained at
    # 0006-0008 on the same dataset, registered before conventions: `text_convention: plain`.
    for epoch in (1, 2):
        checkpoint("job_old", f"ckpt_old{epoch}", epoch, "epoch", run.oldest[epoch - 1], 1)
    checkpoint("job_plain", "ckpt_plain2", 2, "final", run.plain[1], 2)

    with engine.begin() as connection:
        connection.execute(
            DATASETS.insert(),
            [
                dataset("ds_ptb", "ptb", "builtin", ptb, PTB_SPLITS, "plain"),  # registered before conventions
                dataset("ds_wiki", "wiki", "upload", wiki, WIKITEXT_SPLITS, "wikitext"),
                dataset("ds_raw", "raw", "upload", raw, RAW_SPLITS, "plain"),
                dataset("ds_gone", "gone", "upload", gone, PTB_SPLITS, "ptb"),
            ],
        )
        connection.execute(
            JOBS.insert(),
            [
                job("job_old", "ds_ptb", "succeeded", 1, **succeeded),
                job("job_plain", "ds_ptb", "succeeded", 2, vocabulary=vocabulary, **succeeded),
                job(
                    "job_failed",
                    "ds_gone",
                    "failed",
                    3,
                    attempt=3,
                    progress={},
                    error="ds_gone: no ptb.train.txt or train.txt",
                    vocabulary=None,
                ),
            ],
        )
        connection.execute(CHECKPOINTS.insert(), checkpoints)
        connection.execute(
            ALIASES.insert(),
            [
                {"name": "default", "target": "job_old", "updated_at": T0 + timedelta(hours=1)},
                {"name": "ptb-plain", "target": "job_plain", "updated_at": T0 + timedelta(hours=1)},
                {"name": "first-epoch", "target": "ckpt_old1", "updated_at": T0 + timedelta(hours=1)},
            ],
        )
        points = [
            {"job_id": job_id, "key": key, "value": value, "step": 20 * epoch, "epoch": epoch,
             "timestamp": 1_796_000_000_000 + epoch, "attempt": 1}
            for job_id in ("job_old", "job_plain")
            for epoch in (1, 2)
            for key, value in (("train_ppl", 20.0 / epoch), ("valid_ppl", run.valid_ppl[epoch - 1]), ("lr", 1.0))
        ]  # fmt: skip
        connection.execute(METRICS.insert(), points)
        connection.execute(
            JOB_LOGS.insert(),
            [
                {"job_id": "job_old", "attempt": 1, "worker_id": "host:123", "level": "INFO",
                 "message": "epoch 2 done", "created_at": T0 + timedelta(minutes=1, seconds=20)},
            ],
        )  # fmt: skip

    # What must be preserved: each checkpoint's per-token log-probabilities of the PTB-form
    # sentences, split on whitespace, computed straight from its file.
    expected = {}
    for checkpoint_id, content in files.items():
        path = root / f"{checkpoint_id}.pt"
        path.write_bytes(content)
        payload = load(path)
        assert payload["format"] == OLD_FORMAT and "tokenizer" not in payload
        model, vocab, _ = load_model(payload, "cpu")
        scores = score_sentences(model, vocab, [sentence.split() for sentence in SENTENCES])
        expected[checkpoint_id] = [score.logprobs for score in scores]
    return OldState(f"ckpt_old{best + 1}", files, expected)


def snapshot(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the old tables, in the columns they had at 0008."""
    state = {}
    with engine.connect() as connection:
        for table in OLD.sorted_tables:
            key = list(table.primary_key.columns)
            state[table.name] = [dict(row._mapping) for row in connection.execute(sa.select(table).order_by(*key))]
    return state


NEW_COLUMNS = (
    "id",
    "convention",
    "tokenizer",
    "lowercase",
    "min_count",
    "tokenizer_spec",
    "tokens_path",
    "split_stats",
)


def new_dataset_columns(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    datasets = sa.table(
        "datasets",
        *(sa.column(name, sa.JSON if name in ("tokenizer_spec", "split_stats") else None) for name in NEW_COLUMNS),
    )
    with engine.connect() as connection:
        rows = connection.execute(sa.select(datasets)).all()
    return {row.id: dict(row._mapping) for row in rows}


def test_upgrading_a_0008_database_keeps_its_rows_and_answers(
    empty_url: str, tmp_path: Path, old_checkpoints: OldCheckpoints
) -> None:
    # the 0008-era service kept its files in the local data folder: local storage, whatever TEST_STORAGE says
    settings = make_settings(tmp_path, database_url=empty_url, storage_url=None)
    data = settings.data_dir
    migrate.upgrade(empty_url, OLD_HEAD)
    engine = make_engine(empty_url)
    try:
        old = write_old_state(engine, tmp_path, data, old_checkpoints)
        before = snapshot(engine)
        assert {name: len(rows) for name, rows in before.items()} == {
            "datasets": 4,
            "jobs": 3,
            "checkpoints": 3,
            "model_aliases": 3,
            "metrics": 12,
            "job_logs": 1,
        }

        migrate.upgrade(empty_url)
        assert migrate.schema_is_current(engine)

        # Every row is still there, as it was; only the datasets' convention follows their text now.
        after = snapshot(engine)
        conventions = {row["id"]: row.pop("convention") for row in after["datasets"]}
        for row in before["datasets"]:
            row.pop("convention")
        assert after == before
        assert conventions == {"ds_ptb": "ptb", "ds_wiki": "wikitext", "ds_raw": "plain", "ds_gone": "ptb"}
        upgraded = new_dataset_columns(engine)
        assert {id_: row["tokens_path"] for id_, row in upgraded.items()} == dict.fromkeys(upgraded)

        kinds = {"ds_ptb": "ptb", "ds_wiki": "wikitext", "ds_raw": "whitespace", "ds_gone": "ptb"}
        splits = {
            "ds_ptb": counted(PTB_SPLITS),
            "ds_wiki": counted(WIKITEXT_SPLITS),
            "ds_raw": counted(RAW_SPLITS),
            "ds_gone": None,  # its files are gone: no numbers
        }
        with TestClient(create_app(settings)) as client:
            for dataset_id, kind in kinds.items():
                response = client.get(f"/v1/datasets/{dataset_id}")
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["tokenizer"] == {
                    "kind": kind,
                    "lowercase": kind == "ptb",
                    "min_count": 1,
                    "vocab_size": None,
                }, dataset_id
                assert body["splits"] == splits[dataset_id], dataset_id
                assert body["convention"] == conventions[dataset_id]
                old_row = next(row for row in before["datasets"] if row["id"] == dataset_id)
                assert (body["train_tokens"], body["vocab_size"]) == (old_row["train_tokens"], old_row["vocab_size"])
                # What an upload of the same files counts today, <unk> aside (a byte-order mark
                # stays on its word for a dataset that is read as before, an upload drops it).
                if dataset_id != "ds_gone":
                    today = tokenize_corpus(
                        {split: str(find_split(Path(old_row["path"]), split)) for split in SPLITS},
                        str(tmp_path / "today" / dataset_id),
                        TokenizerChoice(),
                        max_train_sentences=1000,
                    )
                    assert today.kind == kind
                    assert {
                        split: {k: v for k, v in stats.report().items() if not k.startswith("unk")}
                        for split, stats in today.splits.items()
                    } == {
                        split: {k: v for k, v in stats.items() if not k.startswith("unk")}
                        for split, stats in body["splits"].items()
                    }
            listed = client.get("/v1/datasets", params={"limit": 100})
            assert listed.status_code == 200, listed.text
            assert {d["id"] for d in listed.json()["items"]} == set(kinds)

            # The jobs, their checkpoints, metric points, log and the aliases answer as before.
            for job_id in ("job_old", "job_plain", "job_failed"):
                response = client.get(f"/v1/jobs/{job_id}")
                assert response.status_code == 200, response.text
                row = next(r for r in before["jobs"] if r["id"] == job_id)
                body = response.json()
                assert (body["status"], body["best_valid_ppl"], body["test_ppl"], body["config"]) == (
                    row["status"],
                    row["best_valid_ppl"],
                    row["test_ppl"],
                    row["config"],
                )
            assert client.get("/v1/jobs/job_failed").json()["evaluation"]["valid"] is None
            evaluation = client.get("/v1/jobs/job_old").json()["evaluation"]
            assert evaluation["tokenizer"] == "ptb"
            assert evaluation["test"]["num_words"] == counted(PTB_SPLITS)["test"]["words"]
            assert client.get("/v1/jobs/job_plain").json()["vocabulary"] == next(
                r["vocabulary"] for r in before["jobs"] if r["id"] == "job_plain"
            )
            metrics = client.get("/v1/jobs/job_old/metrics", params={"key": "valid_ppl"})
            assert metrics.status_code == 200, metrics.text
            assert [m["value"] for m in metrics.json()["metrics"]] == old_checkpoints.valid_ppl
            logs = client.get("/v1/jobs/job_old/logs")
            assert logs.status_code == 200, logs.text
            assert "epoch 2 done" in logs.text
            aliases = client.get("/v1/models/aliases")
            assert aliases.status_code == 200, aliases.text
            assert {a["name"]: a["target"] for a in aliases.json()["data"]} == {
                "default": "job_old",
                "ptb-plain": "job_plain",
                "first-epoch": "ckpt_old1",
            }

            # Downloads are the very files.
            for job_id, checkpoint_id in (
                ("job_old", "ckpt_old1"),
                ("job_old", "ckpt_old2"),
                ("job_plain", "ckpt_plain2"),
            ):
                response = client.get(f"/v1/jobs/{job_id}/checkpoints/{checkpoint_id}/file")
                assert response.status_code == 200, response.text
                assert response.content == old.files[checkpoint_id]

            # Scoring PTB-form sentences answers exactly what the checkpoints compute, by every name,
            # with the model's tokenizer (ptb: the oldest files' vocabulary tells; whitespace: plain)
            # and with the tokens as given.
            served = {
                "job_old": (old.best, "ptb"),
                "default": (old.best, "ptb"),
                old.best: (old.best, "ptb"),
                "first-epoch": ("ckpt_old1", "ptb"),
                "job_plain": ("ckpt_plain2", "whitespace"),
                "ptb-plain": ("ckpt_plain2", "whitespace"),
            }
            for name, (checkpoint_id, tokenizer) in served.items():
                for options in ({}, {"pretokenized": True}, {"pretokenized": False}):
                    response = client.post("/v1/score", json={"model": name, "sentences": SENTENCES, **options})
                    assert response.status_code == 200, (name, options, response.text)
                    body = response.json()
                    assert body["checkpoint_id"] == checkpoint_id and body["tokenizer"] == tokenizer
                    assert [s["tokens"] for s in body["sentences"]] == [[*s.split(), "<eos>"] for s in SENTENCES]
                    assert [s["logprobs"] for s in body["sentences"]] == old.expected[checkpoint_id], (name, options)

            # The upgraded corpus takes new jobs.
            response = client.post("/v1/jobs", json={"dataset_id": "ds_ptb", "preset": "test", "overrides": TINY})
            assert response.status_code == 201, response.text
            new_job = response.json()["id"]
            assert response.json()["evaluation"]["tokenizer"] == "ptb"

        # Down to 0008 and up again, with all of it in place: the same rows, the same numbers.
        migrate.downgrade(empty_url, OLD_HEAD)
        assert migrate.current_revisions(engine) == {OLD_HEAD}
        migrate.upgrade(empty_url)
        again = snapshot(engine)
        assert {r["id"] for r in again["jobs"]} == {"job_old", "job_plain", "job_failed", new_job}
        again["jobs"] = [r for r in again["jobs"] if r["id"] != new_job]
        for row in again["datasets"]:
            row.pop("convention")
        assert again == before
        assert new_dataset_columns(engine) == upgraded
        with TestClient(create_app(settings)) as client:
            response = client.post("/v1/score", json={"model": "default", "sentences": SENTENCES})
            assert response.status_code == 200, response.text
            assert [s["logprobs"] for s in response.json()["sentences"]] == old.expected[old.best]
    finally:
        engine.dispose()
