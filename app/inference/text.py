"""Tokens <-> vocabulary ids, and where tokens sit in the text they came from.

Raw text becomes tokens by the model's tokenizer (`model.tokenizers`); these helpers take the tokens
from there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.errors import Invalid
from model.data import EOS, Vocabulary

SUBWORD_SPACE = "\u2581"  # SentencePiece's word-boundary mark, the space before a piece


def word_offsets(text: str, words: Sequence[str] | None = None) -> list[int]:
    """Character offset of each whitespace word inside `text`; with `words` (the tokens a tokenizer
    made of the text), where each one is found in order, case aside (where it is not, e.g. `N` for
    `5.2` or a byte piece, the offset where the search stands)."""
    if words is None:
        return [match.start() for match in re.finditer(r"\S+", text)]
    lowered, offsets, at = text.lower(), [], 0
    for word in words:
        word = word.lstrip(SUBWORD_SPACE) or word
        found = lowered.find(word.lower(), at)
        while at < len(text) and text[at].isspace():
            at += 1
        if found >= 0:
            at = found
        offsets.append(at)
        if found >= 0:
            at = found + len(word)
    return offsets


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
