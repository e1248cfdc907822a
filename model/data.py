"""Corpus reading, the vocabulary and the seed's batch layout (`reader.ptb_producer`).

A corpus is a folder with `ptb.{train,valid,test}.txt` or `{train,valid,test}.txt`. Tokens of a
file are, for every line, `line.split()` followed by `<eos>`: the text is already tokenized. A folder
made from raw text by a tokenizer (`model.tokenizers`) records it in `tokenizer.json`; its
vocabulary then follows the tokenizer's rules (`min_count`; a subword model's every piece).

The batch layout, for a stream of N ids, B = batch_size and T = num_steps::

    batch_len = N // B                      the tail N - B*batch_len is dropped
    data      = ids[:B*batch_len].view(B, batch_len)

              <-------------- batch_len -------------->
      row 0   a b c d e f | g h i j k l | ...            each row is one contiguous
      row 1   m n o p q r | s t u v w x | ...            slice of the stream
      ...       step 0        step 1
                <-- T -->

    epoch_size = (batch_len - 1) // T
    step i: x = data[:, i*T:(i+1)*T], y = data[:, i*T+1:(i+1)*T+1]

Row b at step i+1 continues exactly where row b stopped at step i, which is why the LSTM state is
carried from one step to the next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from model.tokenizers import EOS, UNK, Tokenizer

SPLITS = ("train", "valid", "test")


class CorpusError(ValueError):
    """A corpus file is missing, empty or not UTF-8 text."""


def tokenize_line(line: str) -> list[str]:
    """Words of one line plus the end-of-sentence marker."""
    return [*line.split(), EOS]


def read_tokens(path: Path) -> list[str]:
    """All tokens of a text file, `<eos>` after every line. Raises `CorpusError` on bad input."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    return tokenize_text(text, str(path))


def tokenize_text(text: str, name: str = "text") -> list[str]:
    """Tokens of a whole text; an empty or whitespace-only text is an error."""
    # Lines as a file iterates them: split on "\n" only; a final newline ends the last line.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    tokens = [token for line in lines for token in tokenize_line(line)]
    if not any(token != EOS for token in tokens):
        raise CorpusError(f"{name}: no words (empty file)")
    return tokens


@dataclass(frozen=True)
class Vocabulary:
    """Id <-> word mapping. Ids follow the seed: descending count, ties broken by the word."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})
        if len(self._index) != len(self.words):
            raise CorpusError("vocabulary has duplicate words")
        if EOS not in self._index:
            raise CorpusError(f"vocabulary lacks {EOS}")

    _index: dict[str, int] = None  # type: ignore[assignment]  # set in __post_init__

    @classmethod
    def build(
        cls, tokens: Iterable[str], max_size: int | None = None, min_count: int = 1, always: Iterable[str] = ()
    ) -> Vocabulary:
        """Vocabulary of a training stream.

        `<unk>` is always present so unseen words are never dropped; words seen fewer than
        `min_count` times, and past `max_size` types the rarest, are folded into `<unk>`. The words
        of `always` (a subword model's pieces) are in it whatever their count, and no cap applies to
        them. On PTB (10,000 types counting `<eos>` and `<unk>`) this is exactly the seed's vocabulary.
        """
        return cls.from_counts(Counter(tokens), max_size, min_count, always)

    @classmethod
    def from_counts(
        cls, counts: Counter[str], max_size: int | None = None, min_count: int = 1, always: Iterable[str] = ()
    ) -> Vocabulary:
        """`build` from the token counts of a training stream."""
        counts, always = Counter(counts), tuple(always)
        required = {EOS, UNK, *always}
        for word in required:
            counts.setdefault(word, 0)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        words = [w for w, n in ordered if n >= min_count or w in required]
        if max_size is not None and len(words) > max_size and not always:
            kept = [w for w in words if w not in required][: max_size - len(required)]
            keep = {*kept, *required}
            words = [w for w in words if w in keep]
        return cls(tuple(words))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def eos_id(self) -> int:
        return self._index[EOS]

    @property
    def unk_id(self) -> int | None:
        return self._index.get(UNK)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def id_of(self, word: str) -> int:
        """Id of `word`, or of `<unk>` when it is out of the vocabulary."""
        index = self._index.get(word)
        if index is not None:
            return index
        if self.unk_id is None:
            raise KeyError(f"{word!r} is not in the vocabulary and the vocabulary has no {UNK}")
        return self.unk_id

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """int64 ids of `tokens`, unknown words mapped to `<unk>`."""
        return torch.tensor([self.id_of(t) for t in tokens], dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids]


def find_split(directory: Path, split: str) -> Path:
    """`ptb.<split>.txt` or `<split>.txt` inside `directory`."""
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        path = directory / name
        if path.is_file():
            return path
    raise CorpusError(f"{directory}: no ptb.{split}.txt or {split}.txt")


@dataclass(frozen=True)
class Corpus:
    """Three id streams sharing the training vocabulary."""

    vocab: Vocabulary
    train: torch.Tensor  # [N_train] int64
    valid: torch.Tensor  # [N_valid]
    test: torch.Tensor  # [N_test]
    unk_counts: dict[str, int]  # out-of-vocabulary tokens per split, mapped to <unk>
    tokenizer: Tokenizer | None = None  # what cut the text into tokens, when the folder records it

    def unk_count(self, split: str) -> int:
        """Tokens of a split that are `<unk>`: out of the vocabulary, or `<unk>` in the text itself."""
        unk = self.vocab.unk_id
        return 0 if unk is None else int((getattr(self, split) == unk).sum())

    @classmethod
    def load(
        cls, directory: str | Path, max_vocab_size: int | None = None, tokenizer: Tokenizer | None = None
    ) -> Corpus:
        """Read a corpus folder; the vocabulary comes from the training file only, by the rules of the
        tokenizer the folder records (or of `tokenizer`, for a folder that records none)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CorpusError(f"{directory}: not a directory")
        try:
            tokenizer = Tokenizer.load(directory) or tokenizer
        except ValueError as exc:
            raise CorpusError(str(exc)) from None
        tokens = {split: read_tokens(find_split(directory, split)) for split in SPLITS}
        vocab = vocabulary_of(tokens["train"], tokenizer, max_vocab_size)
        unk = {split: sum(1 for t in toks if t not in vocab) for split, toks in tokens.items()}
        streams = {split: vocab.encode(toks) for split, toks in tokens.items()}
        return cls(vocab, streams["train"], streams["valid"], streams["test"], unk, tokenizer)


def vocabulary_of(train_tokens: Iterable[str], tokenizer: Tokenizer | None, max_size: int | None = None) -> Vocabulary:
    """The vocabulary a model trains with on tokens cut by `tokenizer`: a subword model's pieces (no
    cap: every text must stay expressible), else the training words from `min_count` times on,
    the `max_size` most frequent."""
    if tokenizer is not None and tokenizer.subword:
        return Vocabulary.build(train_tokens, always=tokenizer.pieces())
    return Vocabulary.build(train_tokens, max_size, tokenizer.min_count if tokenizer is not None else 1)


def epoch_size(num_tokens: int, batch_size: int, num_steps: int) -> int:
    """Steps in one pass over a stream: `((N // B) - 1) // T`."""
    return ((num_tokens // batch_size) - 1) // num_steps


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[N] -> [B, N // B]: B contiguous rows, the remainder dropped."""
    batch_len = ids.numel() // batch_size
    return ids[: batch_size * batch_len].view(batch_size, batch_len)


def batches(
    ids: torch.Tensor, batch_size: int, num_steps: int, start: int = 0, rows: slice | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The seed's `ptb_producer`: (x, y) pairs of shape [B, T], from step `start` on; with `rows`,
    only those streams of the B (one process' block in a run on several, `model.distributed`)."""
    data = batchify(ids, batch_size)
    if rows is not None:
        data = data[rows]
    steps = epoch_size(ids.numel(), batch_size, num_steps)
    if steps < 1:
        raise CorpusError(
            f"{ids.numel()} tokens are too few for batch_size={batch_size} and num_steps={num_steps}: "
            f"need at least {batch_size * (num_steps + 1)}"
        )
    for i in range(start, steps):
        x = data[:, i * num_steps : (i + 1) * num_steps]
        y = data[:, i * num_steps + 1 : (i + 1) * num_steps + 1]
        yield x, y
