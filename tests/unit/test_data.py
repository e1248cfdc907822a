"""model.data: tokenisation (`<eos>` per line), the vocabulary's order and `<unk>` handling, corpus
folder naming and errors, and the seed's `ptb_producer` batch layout against hand-worked examples."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from model.data import EOS, UNK, Corpus, CorpusError, Vocabulary, batches, batchify, epoch_size, read_tokens

REPO = Path(__file__).resolve().parents[2]
CorpusWriter = Callable[..., Path]  # the `write_corpus` fixture of conftest.py


# --- batch layout ------------------------------------------------------------------------------


def test_batches_hand_worked_example() -> None:
    # N = 17, B = 3, T = 2: batch_len = 5, rows 0-4 / 5-9 / 10-14, ids 15 and 16 dropped;
    # epoch_size = (5 - 1) // 2 = 2.
    ids = torch.arange(17)
    assert batchify(ids, 3).tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert epoch_size(17, 3, 2) == 2
    steps = list(batches(ids, 3, 2))
    assert len(steps) == 2
    (x0, y0), (x1, y1) = steps
    assert x0.tolist() == [[0, 1], [5, 6], [10, 11]]
    assert y0.tolist() == [[1, 2], [6, 7], [11, 12]]
    assert x1.tolist() == [[2, 3], [7, 8], [12, 13]]
    assert y1.tolist() == [[3, 4], [8, 9], [13, 14]]
    used = {int(v) for x, y in steps for v in torch.cat([x.flatten(), y.flatten()])}
    assert used == set(range(15))  # the remainder 15, 16 is never read


def test_batches_drop_partial_last_step() -> None:
    # N = 18: batch_len = 6, epoch_size = (6 - 1) // 2 = 2; a third step would need targets from
    # column 6, which does not exist, so column 5 (ids 5, 11, 17) is never read.
    ids = torch.arange(18)
    steps = list(batches(ids, 3, 2))
    assert len(steps) == epoch_size(18, 3, 2) == 2
    assert steps[-1][1].tolist() == [[3, 4], [9, 10], [15, 16]]
    assert all(x.shape == y.shape == (3, 2) for x, y in steps)
    assert all(x.dtype == torch.long for x, _ in steps)


def test_batches_start_skips_done_steps() -> None:
    ids = torch.arange(40)
    all_steps = list(batches(ids, 2, 3))
    assert len(all_steps) == ((40 // 2) - 1) // 3 == 6
    tail = list(batches(ids, 2, 3, start=4))
    assert len(tail) == 2
    for (xa, ya), (xb, yb) in zip(all_steps[4:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(("n", "b", "t"), [(5, 3, 2), (5, 3, 1), (0, 1, 1), (59, 20, 2)])
def test_too_few_tokens_is_an_error(n: int, b: int, t: int) -> None:
    assert epoch_size(n, b, t) < 1
    with pytest.raises(CorpusError, match="too few"):
        list(batches(torch.arange(n), b, t))


def test_smallest_stream_that_works() -> None:
    # B * (T + 1) tokens give exactly one step.
    assert len(list(batches(torch.arange(20 * 3), 20, 2))) == 1


def test_ptb_epoch_sizes() -> None:
    # REFERENCE.md 1.3: PTB train (929,589 tokens) gives 2,323 steps for T=20, 1,327 for T=35.
    assert epoch_size(929_589, 20, 20) == 2323
    assert epoch_size(929_589, 20, 35) == 1327


# --- tokens and vocabulary ---------------------------------------------------------------------


def test_eos_after_every_line(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(" a b \n\n c\td \n", encoding="utf-8")
    assert read_tokens(path) == ["a", "b", EOS, EOS, "c", "d", EOS]
    # No final newline: the last line still ends with <eos>.
    path.write_text("a b\nc", encoding="utf-8")
    assert read_tokens(path) == ["a", "b", EOS, "c", EOS]


def test_vocabulary_order_descending_count_ties_by_word() -> None:
    tokens = ["b", "a", "b", "<eos>", "c", "c", "c", "<eos>", "d", "<eos>"]
    vocab = Vocabulary.build(tokens)
    # counts: <eos> 3, c 3, b 2, a 1, d 1, <unk> 0 (always present); ties by the word ('<' < 'a').
    assert vocab.words == (EOS, "c", "b", "a", "d", UNK)
    assert vocab.eos_id == 0 and vocab.unk_id == 5
    assert vocab.encode(["d", "zebra", "c"]).tolist() == [4, 5, 1]
    assert vocab.decode([1, 2, 0]) == ["c", "b", EOS]


def test_vocabulary_cap_folds_rarest_into_unk() -> None:
    tokens = ["x", "x", "x", "x", "y", "y", "y", "z", "z", "w", "<eos>"]
    vocab = Vocabulary.build(tokens, max_size=4)
    assert len(vocab) == 4
    assert vocab.words == ("x", "y", EOS, UNK)
    assert vocab.id_of("z") == vocab.id_of("w") == vocab.unk_id


def test_vocabulary_without_unk_refuses_unknown_words() -> None:
    vocab = Vocabulary(("a", EOS))
    assert vocab.unk_id is None
    with pytest.raises(KeyError):
        vocab.id_of("b")
    with pytest.raises(CorpusError):
        Vocabulary(("a", "b"))  # no <eos>
    with pytest.raises(CorpusError):
        Vocabulary(("a", "a", EOS))


# --- corpus folders ----------------------------------------------------------------------------


def test_corpus_unseen_words_map_to_unk_never_dropped(write_corpus: CorpusWriter) -> None:
    directory = write_corpus(
        train=["the cat sat", "the dog sat"],
        valid=["the zebra sat", "a b"],
        test=["the cat", "okapi"],
    )
    corpus = Corpus.load(directory)
    vocab = corpus.vocab
    assert corpus.valid.numel() == 3 + 1 + 2 + 1  # every token kept, one id each
    unk = vocab.unk_id
    assert corpus.valid.tolist() == [
        vocab.id_of("the"), unk, vocab.id_of("sat"), vocab.eos_id, unk, unk, vocab.eos_id,
    ]  # fmt: skip
    assert corpus.test.tolist() == [vocab.id_of("the"), vocab.id_of("cat"), vocab.eos_id, unk, vocab.eos_id]
    assert corpus.unk_counts == {"train": 0, "valid": 3, "test": 1}
    # The vocabulary comes from the training file only.
    assert "zebra" not in vocab and "okapi" not in vocab
    assert set(vocab.words) == {"the", "cat", "dog", "sat", EOS, UNK}


def test_corpus_vocabulary_cap_counts_train_unks(write_corpus: CorpusWriter) -> None:
    directory = write_corpus(train=["a a a b b c", "d"], valid=["a d"], test=["c"])
    corpus = Corpus.load(directory, max_vocab_size=4)
    assert corpus.vocab.words == ("a", EOS, "b", UNK)
    assert corpus.unk_counts == {"train": 2, "valid": 1, "test": 1}
    assert corpus.train.numel() == 9  # a a a b b c <eos> d <eos>: folded words stay, as <unk>


def test_corpus_accepts_both_namings(write_corpus: CorpusWriter) -> None:
    lines = ["one two", "two three"]
    ptb = Corpus.load(write_corpus(lines, lines, lines, prefix="ptb."))
    plain = Corpus.load(write_corpus(lines, lines, lines, prefix=""))
    assert ptb.vocab == plain.vocab
    assert torch.equal(ptb.train, plain.train)


def test_corpus_missing_file(write_corpus: CorpusWriter) -> None:
    directory = write_corpus()
    (directory / "ptb.test.txt").unlink()
    with pytest.raises(CorpusError, match="test"):
        Corpus.load(directory)
    with pytest.raises(CorpusError, match="not a directory"):
        Corpus.load(directory / "nowhere")


@pytest.mark.parametrize("content", [b"", b"\n\n", b"   \n \t \n"])
def test_corpus_empty_file(write_corpus: CorpusWriter, content: bytes) -> None:
    directory = write_corpus()
    (directory / "ptb.valid.txt").write_bytes(content)
    with pytest.raises(CorpusError, match="empty"):
        Corpus.load(directory)


def test_corpus_not_utf8(write_corpus: CorpusWriter) -> None:
    directory = write_corpus()
    (directory / "ptb.train.txt").write_bytes(b"good words\nbad \xff\xfe bytes\n")
    with pytest.raises(CorpusError, match="UTF-8"):
        Corpus.load(directory)


def test_corpus_error_is_a_value_error() -> None:
    assert issubclass(CorpusError, ValueError)


@pytest.mark.ptb
def test_real_ptb_vocabulary() -> None:
    directory = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))
    if not (directory / "ptb.train.txt").is_file():
        pytest.skip(f"no PTB corpus at {directory}")
    corpus = Corpus.load(directory, 10_000)
    # REFERENCE.md 1.3: 10,000 types counting <eos>; valid and test have no words outside them.
    assert len(corpus.vocab) == 10_000
    assert corpus.unk_counts == {"train": 0, "valid": 0, "test": 0}
    assert corpus.train.numel() == 929_589
    assert epoch_size(corpus.train.numel(), 20, 20) == 2323
    assert corpus.vocab.words[0] == "the"
