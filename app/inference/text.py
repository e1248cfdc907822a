"""Text <-> words for the inference API: whitespace tokenisation and vocabulary ids.

The models are word-level: a text's words are `text.split()`, exactly as the training reader splits
a line. Raw text is brought to a corpus' own tokenization by `app.inference.conventions`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.errors import Invalid
from model.data import EOS, Vocabulary

NUMBER = "N"
# A token that is a number as a whole: 42, -3, 1,000, 3.14, .5, 2:30, 1/2 or 1\/2 (PTB escapes the
# slash). Words that merely contain digits (1980s, 30-year) stay words, as they do in PTB.
_NUMBER_RE = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:(?::|\\?/)\d+)*")


def tokenize(text: str) -> list[str]:
    """Words of a text: split on whitespace, as the training reader splits a line."""
    return text.split()


KEPT = frozenset({NUMBER, "<unk>", "<eos>"})  # tokens every convention leaves as they are


def is_number(token: str) -> bool:
    """A token that is a number as a whole (42, 1,000, 3.14, 1/2); 1980s and 30-year are words."""
    return _NUMBER_RE.fullmatch(token) is not None


def word_offsets(text: str, words: Sequence[str] | None = None) -> list[int]:
    """Character offset of each word of `tokenize(text)` inside `text`; with `words` (a normalised
    form of the text), where each one is found in order, case aside (where it is not, e.g. `N` for
    `5.2`, the offset where the search stands)."""
    if words is None:
        return [match.start() for match in re.finditer(r"\S+", text)]
    lowered, offsets, at = text.lower(), [], 0
    for word in words:
        found = lowered.find(word.lower(), at)
        while at < len(text) and text[at].isspace():
            at += 1
        if found >= 0:
            at = found
        offsets.append(at)
        if found >= 0:
            at = found + len(word)
    return offsets


def detokenize(words: Sequence[str]) -> str:
    """Words back to text: joined by single spaces."""
    return " ".join(words)


def encode(vocab: Vocabulary, words: Sequence[str]) -> list[int]:
    """Vocabulary ids of words, out-of-vocabulary words as `<unk>`: the ids scoring looks up."""
    try:
        return [vocab.id_of(word) for word in words]
    except KeyError as exc:  # only a vocabulary without <unk> refuses unknown words
        raise Invalid(f"cannot tokenize: {exc.args[0]}") from None


def decode(vocab: Vocabulary, ids: Sequence[int], field: str = "tokens") -> list[str]:
    """The words of vocabulary ids; `Invalid` for an id outside the vocabulary."""
    size = len(vocab)
    bad = next((i for i, token_id in enumerate(ids) if not 0 <= token_id < size), None)
    if bad is not None:
        raise Invalid(f"{field}[{bad}]: token id {ids[bad]} is not in the vocabulary (ids 0 to {size - 1})")
    return [vocab.words[token_id] for token_id in ids]


def split_start(words: Sequence[str]) -> tuple[bool, list[str]]:
    """(starts, words): a leading `<eos>` is the start-of-sentence context every sentence already has,
    not a word to read twice. Evaluation clients put the end-of-text token before a text for that."""
    if words and words[0] == EOS:
        return True, list(words[1:])
    return False, list(words)
