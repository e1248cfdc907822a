"""The vocabulary in view: a dataset reports all its training words, a job the vocabulary it trains
with (every training word unless `vocab_size` caps it) and the `<unk>` rates of its splits; its
checkpoints carry the dataset's text convention."""

from __future__ import annotations

import random
from pathlib import Path

from harness import open_service

from model import checkpoint
from model.data import UNK, Vocabulary, tokenize_text
from model.tokenizers import Tokenizer

WORDS = 12_000  # more than the 10,000 the presets used to cap every corpus at


def write_large_vocabulary_corpus(folder: Path) -> Path:
    """Train: every one of 12,000 words at least once, frequent ones often; valid and test: words
    from the same list, some unseen ones and a literal <unk>."""
    rng = random.Random(5)
    words = [f"w{i}" for i in range(WORDS)]
    train = [words[i : i + 10] for i in range(0, WORDS, 10)]
    train += [[words[min(int(rng.paretovariate(1.0)), WORDS - 1)] for _ in range(8)] for _ in range(400)]
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("".join(" ".join(line) + "\n" for line in train))
    for split, seed in (("valid", 1), ("test", 2)):
        r = random.Random(seed)
        lines = [[r.choice(words) for _ in range(6)] + ["unseen", UNK] for _ in range(30)]
        (folder / f"{split}.txt").write_text("".join(" ".join(line) + "\n" for line in lines))
    return folder


def expected_unk(folder: Path, cap: int | None) -> dict[str, tuple[int, float]]:
    tokens = {s: tokenize_text((folder / f"{s}.txt").read_text()) for s in ("train", "valid", "test")}
    vocab = Vocabulary.build(tokens["train"], cap)
    out = {}
    for split, toks in tokens.items():
        unk = sum(1 for t in toks if t not in vocab or t == UNK)
        out[split] = (unk, unk / len(toks))
    return out


def test_a_job_reports_its_vocabulary_and_unk_rates(tmp_path: Path) -> None:
    service, close = open_service(tmp_path)
    try:
        corpus = write_large_vocabulary_corpus(tmp_path / "corpus")
        files = {s: (f"{s}.txt", (corpus / f"{s}.txt").read_bytes(), "text/plain") for s in ("train", "valid", "test")}
        response = service.client.post("/v1/datasets", files=files, data={"convention": "wikitext"})
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["vocab_size"] == WORDS + 2  # every training word, <eos> and <unk>
        full = service.submit(dataset["id"], max_max_epoch=1, max_steps_per_epoch=2)
        assert full["config"]["vocab_size"] is None and full["vocabulary"] is None  # not read yet
        capped = service.submit(dataset["id"], max_max_epoch=1, max_steps_per_epoch=2, vocab_size=10_000)
        worker = service.start_worker("--burst")
        assert worker.wait(240) == 0, worker.log()
        for job, cap, size in ((full, None, WORDS + 2), (capped, 10_000, 10_000)):
            done = service.wait_status(job["id"], ("succeeded",))
            vocabulary = done["vocabulary"]
            assert vocabulary["size"] == size and vocabulary["cap"] == cap
            for split, (unk, rate) in expected_unk(corpus, cap).items():
                assert vocabulary[f"{split}_unk"] == unk and vocabulary[f"{split}_unk_rate"] == rate
        # Its checkpoints carry the dataset's tokenizer.
        listed = service.client.get(f"/v1/jobs/{full['id']}/checkpoints").json()["items"]
        raw = service.client.get(listed[-1]["download_url"]).content
        (tmp_path / "final.pt").write_bytes(raw)
        assert checkpoint.tokenizer_of(checkpoint.load(tmp_path / "final.pt")) == Tokenizer("wikitext")
        full_done, capped_done = service.job(full["id"]), service.job(capped["id"])
        assert full_done["vocabulary"]["train_unk"] == 0
        assert capped_done["vocabulary"]["valid_unk_rate"] > full_done["vocabulary"]["valid_unk_rate"] > 0
    finally:
        close()
