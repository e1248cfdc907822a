"""Text <-> words for the inference API: whitespace tokenisation and the PTB normalisation.

The models are word-level: a text's words are `text.split()`, exactly as the training reader splits
a line. The Penn Treebank text the presets train on is lower-cased and has every number replaced by
`N`; `normalize_ptb` applies the same two rules to user text so that it meets the vocabulary.
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


KEPT = frozenset({NUMBER, "<unk>", "<eos>"})  # already in PTB's form: lower-casing would break them


def normalize_ptb(words: Sequence[str]) -> list[str]:
    """PTB's conventions: lower case, and `N` for every token that is a number. Text already in
    that form is unchanged: `N`, `<unk>` and `<eos>` stay as they are."""
    return [word if word in KEPT else NUMBER if _NUMBER_RE.fullmatch(word) else word.lower() for word in words]


def word_offsets(text: str) -> list[int]:
    """Character offset of each word of `tokenize(text)` inside `text`."""
    return [match.start() for match in re.finditer(r"\S+", text)]


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
