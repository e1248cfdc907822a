"""Text <-> words for the inference API: whitespace tokenisation and the PTB normalisation.

The models are word-level: a text's words are `text.split()`, exactly as the training reader splits
a line. The Penn Treebank text the presets train on is lower-cased and has every number replaced by
`N`; `normalize_ptb` applies the same two rules to user text so that it meets the vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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
