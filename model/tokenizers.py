"""Tokenizers: how raw text becomes a model's tokens, and its tokens readable text again.

A model is trained on tokens and can only be asked about tokens, so its tokenizer is part of it:
a dataset records the tokenizer its text was cut with, every checkpoint carries it, and scoring
and generation use it on raw text. Five kinds:

- `whitespace`: words are what whitespace separates; nothing else changes.
- `ptb`, the Penn Treebank as language models use it (Mikolov's version): Treebank tokenization
  (`company 's`, `do n't`), lower case, every number `N` (and `%` too: `5.2%` is `N N`), punctuation
  dropped except `$`, `&`, `#` and the possessive `'`.
- `wikitext`, WikiText's tokenized text: case kept, punctuation split off, `@-@`, `@,@` and `@.@`
  between the parts of hyphenated words and numbers (`state @-@ of @-@ the @-@ art`, `1 @,@ 000`),
  contractions split at the apostrophe (`don 't`), straight quotes.
- `bpe` and `unigram`: open-vocabulary subword models (SentencePiece), trained on a corpus' training
  text, with byte fallback: any text, in any script, is pieces of the model; nothing is unknown.

The three word-level kinds are closed-vocabulary: a word the training text did not have (or had
fewer than `min_count` times) is `<unk>`. Text already in a word-level kind's form comes out of
`tokens` unchanged (the PTB files themselves: tested over all three).

Every kind reads a line the same way: a byte-order mark at its start is dropped, `lowercase`
lower-cases it first (always on for `ptb`). `split_lines` cuts a text at `\\r\\n`, `\\r` and `\\n`.

Only the standard library and torch are imported at module load: NLTK (the Treebank rules) and
SentencePiece are imported on first use of a kind that needs them, so PTB-form training reads
tokens without either.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

WHITESPACE, PTB, WIKITEXT, BPE, UNIGRAM = "whitespace", "ptb", "wikitext", "bpe", "unigram"
WORD_LEVEL = (WHITESPACE, PTB, WIKITEXT)
SUBWORD = (BPE, UNIGRAM)
KINDS = WORD_LEVEL + SUBWORD
# The text conventions of earlier versions (format-1 checkpoints, the `convention` field): `plain`
# was whitespace.
LEGACY_NAMES = {"plain": WHITESPACE, PTB: PTB, WIKITEXT: WIKITEXT}
SPEC_FILE, MODEL_FILE = "tokenizer.json", "tokenizer.model"  # in a tokenized corpus folder
DEFAULT_SUBWORD_VOCAB = 16_000
BOM = "\ufeff"

NUMBER = "N"
EOS, UNK = "<eos>", "<unk>"  # the end-of-sentence token after every line, the unknown word
KEPT = frozenset({NUMBER, UNK, EOS})  # tokens every word-level kind leaves as they are
# A token that is a number as a whole: 42, -3, 1,000, 3.14, .5, 2:30, 1/2 or 1\/2 (PTB escapes the
# slash). Words that merely contain digits (1980s, 30-year) stay words, as they do in PTB.
_NUMBER_RE = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:(?::|\\?/)\d+)*")
_LINE_END = re.compile(r"\r\n|\r|\n")

PTB_PUNCTUATION = frozenset({"$", "&", "#", "'"})  # the only punctuation PTB's language-model text keeps
WIKITEXT_JOINERS = {"-": "@-@", ",": "@,@", ".": "@.@"}
# A hyphen inside a word, a comma or point inside a number: "state-of-the-art", "1,000", "5.2"
_JOINED = re.compile(r"(?<=\w)(-)(?=\w)|(?<=\d)([,.])(?=\d)")
_PLACEHOLDER = re.compile(r"ZZPROTECTED(\d+)ZZ")
# Abbreviations whose point PTB keeps at a sentence's end ("... of acme corp."), where the Treebank
# tokenizer would split it off as the sentence's full stop: companies, titles, US states, months.
_ABBREVIATIONS = (
    "corp|co|cos|inc|ltd|bros|plc|mr|mrs|ms|dr|jr|sr|st|gov|sen|prof|lt|sgt|capt|"
    "ala|ariz|ark|calif|colo|conn|fla|ga|ind|kan|ky|md|mich|minn|mont|neb|nev|"
    "okla|tenn|tex|va|vt|wis|wyo|jan|feb|aug|sept|oct|nov|[a-z]"
)
# Kept whole through the Treebank tokenizer: at&t and s&p; u.s. and n.v., which it would split at a
# text's end, and a final abbreviation; currency prefixes (us$, c$, hk$); PTB's escaped asterisks.
_PTB_PROTECT = re.compile(
    r"<unk>|<eos>|\w+(?:&\w+)+|\b\w+(?:\.\w+)+\.(?=\s|$)"
    rf"|\b(?:{_ABBREVIATIONS})\.(?=\s*$)|\b[A-Za-z]{{1,3}}\$|(?:\\\*)+",
    re.IGNORECASE,
)
_PTB_SPACED = re.compile(r"[A-Za-z]{1,3}\$|(?:\\\*)+")  # protected spans that are tokens of their own
_ESCAPED_STARS = re.compile(r"(?:\\\*)+")
_WIKITEXT_PROTECT = re.compile(r"<unk>|<eos>|@[-,.]@")
_HAS_WORD_CHAR = re.compile(r"\w")
_QUOTES = {"``": '"', "''": '"'}
TEXT_CONTEXT = 64  # tokens before a new one that decide how it joins the text (a contraction, an open quote)


class TokenizerError(ValueError):
    """A tokenizer description or subword model that cannot be used."""


def is_number(token: str) -> bool:
    """A token that is a number as a whole (42, 1,000, 3.14, 1/2); 1980s and 30-year are words."""
    return _NUMBER_RE.fullmatch(token) is not None


def split_lines(text: str) -> list[str]:
    """The lines of a text: `\\r\\n`, `\\r` and `\\n` each end one (a final line end adds no empty
    line), and a byte-order mark at the start of a line is dropped."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return [line[1:] if line.startswith(BOM) else line for line in lines]


def words_of(text: str) -> list[str]:
    """The whitespace-separated words of a raw text: what word perplexity counts (lm-evaluation-harness
    splits on whitespace too)."""
    return text.split()


@dataclass(frozen=True)
class Tokenizer:
    """One tokenizer: a kind, its options and, for a subword kind, the trained model."""

    kind: str = WHITESPACE
    lowercase: bool = False
    min_count: int = 1  # word-level: a training word seen fewer times is <unk> (the vocabulary's rule)
    model: bytes | None = field(default=None, repr=False)  # subword: SentencePiece's serialized model

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TokenizerError(f"tokenizer {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind in SUBWORD and not self.model:
            raise TokenizerError(f"a {self.kind} tokenizer needs its trained model")
        if self.kind == PTB and not self.lowercase:
            object.__setattr__(self, "lowercase", True)  # PTB's text is lower case
        if self.min_count < 1:
            raise TokenizerError(f"min_count must be at least 1, got {self.min_count}")

    @property
    def subword(self) -> bool:
        """Open vocabulary: every text is pieces of the model, so no token is ever `<unk>`."""
        return self.kind in SUBWORD

    @cached_property
    def _processor(self) -> Any:
        return _sentencepiece_processor(self.model or b"")

    def tokens(self, text: str) -> list[str]:
        """The tokens of one sentence of raw text (see the module docstring)."""
        if text.startswith(BOM):
            text = text[1:]
        if self.kind == PTB:  # lower-cases word by word: `N` and `<unk>` stay
            return [w for w in (_ptb_token(t) for t in _treebank_split(text, _PTB_PROTECT)) if w is not None]
        if self.subword:
            # The literal <eos> is the end-of-sentence token here too (clients find its id by it).
            pieces: list[str] = []
            for i, part in enumerate(text.split(EOS)):
                if i:
                    pieces.append(EOS)
                # SentencePiece reads " " as a word boundary; other whitespace would end up inside a piece
                line = " ".join((part.lower() if self.lowercase else part).split())
                if line:
                    pieces += self._processor.encode(line, out_type=str)
            return pieces
        tokens = text.split() if self.kind == WHITESPACE else _wikitext_tokens(_treebank_split(text, _WIKITEXT_PROTECT))
        return [t if t in KEPT else t.lower() for t in tokens] if self.lowercase else tokens

    def text(self, tokens: Sequence[str]) -> str:
        """Readable text from tokens: `the company 's shares` -> `the company's shares`, subword pieces
        joined into words. An `<eos>` inside stays, spaced, as the sentence boundary it is."""
        if EOS in tokens:
            parts: list[str] = []
            segment: list[str] = []
            for token in [*tokens, EOS]:
                if token != EOS:
                    segment.append(token)
                    continue
                if segment:
                    parts.append(self._text(segment))
                parts.append(EOS)
                segment = []
            return " ".join(parts[:-1])
        return self._text(tokens)

    def _text(self, tokens: Sequence[str]) -> str:
        if not tokens:
            return ""
        if self.subword:
            text: str = self._processor.decode_pieces(tokens)
            return text
        if self.kind == WHITESPACE:
            return " ".join(tokens)
        if self.kind == WIKITEXT:
            tokens = _quote_pairs(_rejoin_apostrophes(_join_wikitext(tokens)))
        _, detokenizer = _treebank()
        detokenized: str = detokenizer.detokenize(tokens)
        return detokenized

    def text_delta(self, previous: Sequence[str], token: str) -> str:
        """What a streamed `token` adds to the readable text of the `previous` tokens, so that the
        pieces of a stream join to `text` of the whole: `'s` after `company` adds `'s`, not ` 's`; a
        byte piece that starts a character adds nothing until the character is complete (`text_rest`
        gives what is held back when the stream ends). Only the last `TEXT_CONTEXT` tokens are read;
        where the text before would change, the token is spaced."""
        context = list(previous[-TEXT_CONTEXT:])
        after_tokens = [*context, token]
        before = self.text(context[: len(context) - _incomplete_bytes(context)])
        after = self.text(after_tokens[: len(after_tokens) - _incomplete_bytes(after_tokens)])
        if after.startswith(before):
            return after[len(before) :]
        return f" {token}" if previous else token

    def text_rest(self, tokens: Sequence[str]) -> str:
        """What `text_delta` held back at the end of a stream of `tokens`: the bytes of a character
        it never completed (as U+FFFD, as `text` writes them); empty for a word-level kind."""
        held = _incomplete_bytes(tokens[-TEXT_CONTEXT:])
        if not held:
            return ""
        context = list(tokens[-TEXT_CONTEXT:])
        whole, shown = self.text(context), self.text(context[:-held])
        return whole[len(shown) :] if whole.startswith(shown) else ""

    def pieces(self) -> list[str]:
        """Every token a subword model can produce (its pieces, byte pieces included); empty for a
        word-level kind, whose vocabulary is the training text's."""
        if not self.subword:
            return []
        processor = self._processor
        return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]

    def describe(self) -> dict[str, Any]:
        """The tokenizer's settings as JSON (no model bytes)."""
        out: dict[str, Any] = {"kind": self.kind, "lowercase": self.lowercase}
        if self.subword:
            out["vocab_size"] = len(self.pieces())
        else:
            out["min_count"] = self.min_count
        return out

    def to_payload(self) -> dict[str, Any]:
        """What a checkpoint stores: the settings and, for a subword kind, the model's bytes."""
        payload: dict[str, Any] = {"kind": self.kind, "lowercase": self.lowercase, "min_count": self.min_count}
        if self.model is not None:
            payload["model"] = self.model
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Tokenizer:
        """The tokenizer a checkpoint stored (`to_payload`); `TokenizerError` if it is not one."""
        try:
            model = payload.get("model")
            return cls(
                kind=str(payload["kind"]),
                lowercase=bool(payload.get("lowercase", False)),
                min_count=int(payload.get("min_count", 1)),
                model=bytes(model) if model is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenizerError(f"not a tokenizer description: {exc}") from None

    def save(self, folder: Path) -> None:
        """Write `tokenizer.json` (and `tokenizer.model` for a subword kind) into a corpus folder."""
        if self.model is not None:
            (folder / MODEL_FILE).write_bytes(self.model)
        spec = {"kind": self.kind, "lowercase": self.lowercase, "min_count": self.min_count}
        (folder / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Tokenizer | None:
        """The tokenizer a corpus folder records, None for a folder without one (whitespace-split text)."""
        spec_path = folder / SPEC_FILE
        if not spec_path.is_file():
            return None
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
            model_path = folder / MODEL_FILE
            if spec.get("kind") in SUBWORD:
                spec["model"] = model_path.read_bytes()
        except (OSError, ValueError, AttributeError) as exc:
            raise TokenizerError(f"{spec_path}: unreadable tokenizer ({exc})") from None
        return cls.from_payload(spec)


_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")  # SentencePiece's byte-fallback pieces


def _incomplete_bytes(tokens: Sequence[str]) -> int:
    """How many byte pieces at the end of `tokens` begin a UTF-8 character they do not complete."""
    run: list[int] = []
    for token in reversed(tokens):
        match = _BYTE_PIECE.fullmatch(token)
        if match is None:
            break
        run.append(int(match.group(1), 16))
    data = bytes(reversed(run))
    for cut in range(min(3, len(data)) + 1):
        try:
            data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return cut
    return 0  # not UTF-8 at all: written as it is


def legacy_name(kind: str) -> str:
    """A kind's earlier text-convention name (`whitespace` was `plain`); subword kinds had none."""
    return next((old for old, new in LEGACY_NAMES.items() if new == kind), kind)


def legacy(convention: str | None) -> Tokenizer | None:
    """The tokenizer of an earlier version's text convention (`plain`, `ptb`, `wikitext`)."""
    kind = LEGACY_NAMES.get(convention or "")
    return Tokenizer(kind) if kind is not None else None


def train_subword(
    kind: str,
    lines: Iterable[str],
    vocab_size: int = DEFAULT_SUBWORD_VOCAB,
    lowercase: bool = False,
    max_sentences: int = 1_000_000,
) -> Tokenizer:
    """A `bpe` or `unigram` SentencePiece model trained on `lines` (at most `max_sentences` of them,
    spread evenly over the text) with byte fallback. `vocab_size` is an upper bound: a small text
    gets fewer pieces. Deterministic: the same lines give the same model."""
    if kind not in SUBWORD:
        raise TokenizerError(f"{kind!r} is not a subword tokenizer ({', '.join(SUBWORD)})")
    import sentencepiece

    kept = [" ".join((line.lower() if lowercase else line).split()) for line in lines]
    kept = [line for line in kept if line]
    if len(kept) > max_sentences:
        stride = len(kept) / max_sentences
        kept = [kept[int(i * stride)] for i in range(max_sentences)]
    if not kept:
        raise TokenizerError("no text to train a subword model on")
    out = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(kept),
            model_writer=out,
            model_type=kind,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small text gets the pieces it has
            byte_fallback=True,  # no text is ever unknown
            character_coverage=1.0,
            normalization_rule_name="identity",  # text decodes back exactly as written
            split_digits=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            unk_piece=UNK,
            num_threads=1,
            minloglevel=2,
            max_sentence_length=1 << 20,
            input_sentence_size=0,
            shuffle_input_sentence=False,
        )
    except RuntimeError as exc:
        raise TokenizerError(f"cannot train a {kind} model on this text: {exc}") from None
    return Tokenizer(kind, lowercase=lowercase, model=out.getvalue())


@cache
def _sentencepiece_processor(model: bytes) -> Any:
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_proto=model)
    except RuntimeError as exc:
        raise TokenizerError(f"not a SentencePiece model: {exc}") from None


def iter_tokens(tokenizer: Tokenizer, text: str) -> Iterator[list[str]]:
    """The tokens of each line of a raw text (`split_lines`)."""
    for line in split_lines(text):
        yield tokenizer.tokens(line)


# --- the word-level kinds ---


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
        span = match.group(0)
        spans.append(span)
        placeholder = f"ZZPROTECTED{len(spans) - 1}ZZ"
        word_inside = span[0].isalnum() and not _PTB_SPACED.fullmatch(span)  # at&t: part of a word
        return placeholder if word_inside else f" {placeholder} "

    tokens = tokenizer.tokenize(protect.sub(hold, text))
    return [_PLACEHOLDER.sub(lambda m: spans[int(m.group(1))], token) for token in tokens]


def _ptb_token(token: str) -> str | None:
    if token in KEPT:
        return token
    if token == "%" or is_number(token):
        return NUMBER
    if token in PTB_PUNCTUATION or _ESCAPED_STARS.fullmatch(token):
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


def _join_wikitext(tokens: Sequence[str]) -> list[str]:
    """WikiText's `state @-@ of` -> `state-of`, `1 @,@ 000` -> `1,000`."""
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
    return joined


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


def detect(tokens: Iterable[str]) -> str:
    """The word-level kind a corpus' training tokens (or a model's vocabulary) are already in, where
    it is obvious; `whitespace` otherwise.

    WikiText: its `@-@`, `@,@` or `@.@` tokens. PTB: the number token `N`, no number written in
    digits (digits only inside words: 1980s, 190.58-point) and no capital letter.
    """
    has_number_token = has_digits_number = has_capitals = False
    for token in tokens:
        if token in WIKITEXT_JOINERS.values():
            return WIKITEXT
        if token == NUMBER:
            has_number_token = True
        elif token not in KEPT:
            has_capitals = has_capitals or token != token.lower()
            has_digits_number = has_digits_number or is_number(token)
    return PTB if has_number_token and not has_digits_number and not has_capitals else WHITESPACE
