"""Text conventions: how a corpus writes its words, so that raw text can meet a model's vocabulary.

A word-level model knows only the tokens its training text had. Three conventions:

- `ptb`, the Penn Treebank as language models use it (Mikolov's version): Treebank tokenization
  (`company 's`, `do n't`), lower case, every number `N` (and `%` too: `5.2%` is `N N`), punctuation
  dropped except `$`, `&`, `#` and the possessive `'`;
- `wikitext`, WikiText's tokenized text: case kept, punctuation split off, `@-@`, `@,@` and `@.@`
  between the parts of hyphenated words and numbers (`state @-@ of @-@ the @-@ art`, `1 @,@ 000`),
  contractions split at the apostrophe (`don 't`), straight quotes;
- `plain`: words are what whitespace separates; nothing changes.

`to_words` turns raw text into a convention's tokens (Treebank splitting with NLTK's tokenizer,
then the corpus' own rules); `to_text` turns tokens back into readable text. Text already in a
convention's form comes out of `to_words` unchanged. `detect` guesses a corpus' convention from its
training text where the text makes it obvious.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from app.inference.text import KEPT, NUMBER, is_number, tokenize

PTB, WIKITEXT, PLAIN = "ptb", "wikitext", "plain"
CONVENTIONS = (PTB, WIKITEXT, PLAIN)

PTB_PUNCTUATION = frozenset({"$", "&", "#", "'"})  # the only punctuation PTB's language-model text keeps
WIKITEXT_JOINERS = {"-": "@-@", ",": "@,@", ".": "@.@"}
# A hyphen inside a word, a comma or point inside a number: "state-of-the-art", "1,000", "5.2"
_JOINED = re.compile(r"(?<=\w)(-)(?=\w)|(?<=\d)([,.])(?=\d)")
_PLACEHOLDER = re.compile(r"ZZPROTECTED(\d+)ZZ")
# at&t and s&p are PTB words; so are u.s. and n.v., which the tokenizer would split at a text's end
_PTB_PROTECT = re.compile(r"<unk>|<eos>|\w+(?:&\w+)+|\b\w+(?:\.\w+)+\.(?=\s|$)")
_WIKITEXT_PROTECT = re.compile(r"<unk>|<eos>|@[-,.]@")
_HAS_WORD_CHAR = re.compile(r"\w")
_QUOTES = {"``": '"', "''": '"'}


@cache
def _treebank() -> tuple[Any, Any]:
    """NLTK's Treebank tokenizer and detokenizer, imported on first use (NLTK is slow to import)."""
    from nltk.tokenize.treebank import TreebankWordDetokenizer, TreebankWordTokenizer

    return TreebankWordTokenizer(), TreebankWordDetokenizer()


def _treebank_split(text: str, protect: re.Pattern[str]) -> list[str]:
    """Treebank tokens of a text; spans matching `protect` (`<unk>`, `@-@`, ...) are kept whole.

    The tokenizer runs on the whole text (it splits a sentence-final period only, so `mr.` stays),
    with each protected span replaced by a placeholder of letters it leaves alone.
    """
    tokenizer, _ = _treebank()
    spans: list[str] = []

    def hold(match: re.Match[str]) -> str:
        spans.append(match.group(0))
        word_inside = match.group(0)[0].isalnum()  # at&t: part of a word, no spaces around it
        placeholder = f"ZZPROTECTED{len(spans) - 1}ZZ"
        return placeholder if word_inside else f" {placeholder} "

    tokens = tokenizer.tokenize(protect.sub(hold, text))
    return [_PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], token) for token in tokens]


def _ptb_token(token: str) -> str | None:
    if token in KEPT:
        return token
    if token == "%" or is_number(token):
        return NUMBER
    if token in PTB_PUNCTUATION:
        return token
    if not _HAS_WORD_CHAR.search(token):
        return None  # punctuation PTB's text does not have
    return token.lower()


def _wikitext_tokens(tokens: Iterable[str]) -> list[str]:
    out: list[str] = []
    for token in tokens:
        token = _QUOTES.get(token, token)
        if token.lower() == "n't" and out:  # Treebank's "do n't" is WikiText's "don 't"
            out[-1] += token[0]
            out.append(token[1:])
            continue
        if token in KEPT or token in WIKITEXT_JOINERS.values():
            out.append(token)
            continue
        parts = _JOINED.split(token)  # "1,000" -> ["1", None, ",", "000"]: text, then the two groups
        for i, part in enumerate(parts):
            if part:
                out.append(part if i % 3 == 0 else WIKITEXT_JOINERS[part])
    return out


def to_words(text: str, convention: str) -> list[str]:
    """The tokens raw `text` becomes in `convention` (see the module docstring)."""
    if convention == PTB:
        return [w for w in (_ptb_token(t) for t in _treebank_split(text, _PTB_PROTECT)) if w is not None]
    if convention == WIKITEXT:
        return _wikitext_tokens(_treebank_split(text, _WIKITEXT_PROTECT))
    return text.split()


def words_of(text: str, convention: str, normalize: bool) -> list[str]:
    """The words a request's text is looked up as: `convention`'s tokens when asked to normalise,
    else the whitespace-separated words as they are."""
    return to_words(text, convention) if normalize else tokenize(text)


TEXT_CONTEXT = 64  # words before a new one that decide how it joins the text (a contraction, an open quote)


def text_delta(previous: Sequence[str], word: str, convention: str) -> str:
    """What a streamed `word` adds to the readable text of the `previous` words, so that the pieces
    of a stream join to `to_text` of the whole: `'s` after `company` adds `'s`, not ` 's`. Only the
    last `TEXT_CONTEXT` words are read; where the text before would change, the word is spaced."""
    context = list(previous[-TEXT_CONTEXT:])
    before, after = to_text(context, convention), to_text([*context, word], convention)
    if after.startswith(before):
        return after[len(before) :]
    return f" {word}" if previous else word


def to_text(words: Sequence[str], convention: str) -> str:
    """Readable text from a convention's tokens: `the company 's shares` -> `the company's shares`."""
    if convention == PLAIN or not words:
        return " ".join(words)
    tokens = list(words)
    if convention == WIKITEXT:
        joined: list[str] = []
        glue = {v: k for k, v in WIKITEXT_JOINERS.items()}
        attach = False  # the previous token was @-@, @,@ or @.@: this one continues the word
        for token in tokens:
            if token in glue and joined:
                joined[-1] += glue[token]
                attach = True
            elif attach:
                joined[-1] += token
                attach = False
            else:
                joined.append(token)
        tokens = _quote_pairs(_rejoin_apostrophes(joined))
    _, detokenizer = _treebank()
    text: str = detokenizer.detokenize(tokens)
    return text


def _rejoin_apostrophes(tokens: list[str]) -> list[str]:
    """WikiText's `don 't` -> Treebank's `do n't`, which the detokenizer joins back."""
    out: list[str] = []
    for token in tokens:
        if token.lower() == "'t" and out and out[-1].lower().endswith("n"):
            out[-1], token = out[-1][:-1], out[-1][-1] + token
        out.append(token)
    return out


def _quote_pairs(tokens: list[str]) -> list[str]:
    """Straight quotes as Treebank's opening and closing quotes, alternately, for the detokenizer."""
    out, opening = [], True
    for token in tokens:
        if token == '"':
            token, opening = ("``" if opening else "''"), not opening
        out.append(token)
    return out


def detect(words: Iterable[str]) -> str:
    """A corpus' convention from its training tokens (or a model's vocabulary), where it is obvious;
    `plain` otherwise.

    WikiText: its `@-@`, `@,@` or `@.@` tokens. PTB: the number token `N`, no number written in
    digits (digits only inside words: 1980s, 190.58-point) and no capital letter.
    """
    has_number_token = has_digits_number = has_capitals = False
    for word in words:
        if word in WIKITEXT_JOINERS.values():
            return WIKITEXT
        if word == NUMBER:
            has_number_token = True
        elif word not in KEPT:
            has_capitals = has_capitals or word != word.lower()
            has_digits_number = has_digits_number or is_number(word)
    return PTB if has_number_token and not has_digits_number and not has_capitals else PLAIN
