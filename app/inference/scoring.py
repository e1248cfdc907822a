"""Sentence scoring for the API: limits, tokenization, log base and the aggregates.

Every sentence is scored from a fresh zero state with `<eos>` as its context
(`model.inference.score_sentences`), so its numbers never depend on the other sentences of the
request, on padding or on the batch size.

A sentence is raw text, cut into tokens by the model's own tokenizer (`model.tokenizers`: the one
its training text was cut with); `pretokenized` takes the text's whitespace-separated tokens as
they are instead.

Perplexity is always exp(-mean natural-log probability), whatever `log10` says: 10 ** -(mean log10 p)
is the same number. The numbers say what they average:

- `perplexity` (per sentence) and `corpus_perplexity`: per token, exp(-sum of all log p / number of
  tokens), what a corpus evaluation reports; only comparable between models with one tokenizer;
- `word_perplexity`: exp(-sum of log p / number of words), the words being the text split on
  whitespace as given, and `bits_per_byte`: -sum of log2 p / UTF-8 bytes of the text. They do not
  depend on the tokenizer: lm-evaluation-harness' definitions, comparable across tokenizers;
- `mean_sentence_perplexity`: the plain mean of the per-sentence perplexities;
- `..._without_unk`: the same with the `<unk>` tokens left out of the sums and counts (they still
  serve as context), KenLM's "excluding OOVs";
- `unk_rate`: the share of tokens that are `<unk>`. An unknown word is scored as `<unk>`, often a
  likely token, so a text full of them gets a flattering perplexity: past `unk_warn_rate` the answer
  carries a warning, and `max_unk_rate` refuses it. An open-vocabulary (subword) model has none.

An empty sentence (a blank line) is allowed: with `score_eos` its one token is the `<eos>` that ends
it, and it counts like any sentence; without `score_eos` it has no token, its perplexity is null, it
adds nothing to the token-weighted sums and is left out of the per-sentence means, while
`num_sentences` still counts it. A number with no token (word, byte) to average over is null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import Invalid
from app.inference.registry import LoadedModel
from app.settings import Settings
from model.inference import SentenceScore, score_sentences
from model.tokenizers import Tokenizer, words_of
from model.train import perplexity

LN10, LN2 = math.log(10.0), math.log(2.0)


@dataclass(frozen=True)
class ScoreOptions:
    log10: bool = False  # report log-probabilities in base 10 (KenLM) instead of base e
    score_eos: bool = True  # score the end-of-sentence marker after the last word
    pretokenized: bool = False  # the text is tokens already: split on whitespace, no tokenizer
    precision: str = "fp32"  # fp32 or bf16 (see model.inference)
    max_unk_rate: float | None = None  # refuse (422) a text whose share of <unk> tokens is above it


@dataclass(frozen=True)
class Sentence:
    """One sentence as scored: its tokens, and the words and bytes of the text it came from."""

    tokens: list[str]
    num_words: int
    num_bytes: int


@dataclass(frozen=True)
class ScoredSentence:
    tokens: list[str]  # the looked-up tokens, then <eos> when it is scored
    logprobs: list[float]  # log p(token | previous tokens), base e or 10
    is_unk: list[bool]
    total_logprob: float
    num_tokens: int
    num_unk: int
    num_words: int
    num_bytes: int
    perplexity: float | None  # None for a sentence with no token (empty, score_eos off)
    perplexity_without_unk: float | None  # None when every token is <unk>
    word_perplexity: float | None  # None for a text with no word
    bits_per_byte: float | None  # None for an empty text
    unk_rate: float | None  # None for a sentence with no token


@dataclass(frozen=True)
class ScoreTotals:
    num_sentences: int
    num_tokens: int
    num_unk: int
    num_words: int
    num_bytes: int
    total_logprob: float
    corpus_perplexity: float | None  # None when no sentence has a token
    corpus_perplexity_without_unk: float | None
    mean_sentence_perplexity: float | None
    mean_sentence_perplexity_without_unk: float | None
    word_perplexity: float | None
    bits_per_byte: float | None
    unk_rate: float | None


@dataclass(frozen=True)
class UnkWarning:
    """A text whose share of `<unk>` tokens is past the server's `unk_warn_rate`."""

    sentence: int | None  # its index; None for the request's aggregate
    unk_rate: float
    message: str


def perplexity_of_logprobs(total_ln: float, count: int) -> float | None:
    """The perplexity of `count` tokens whose natural-log probabilities sum to `total_ln` (the
    trainer's `perplexity`: inf rather than an overflow); None for no token."""
    return None if count == 0 else perplexity(-total_ln, count)


def bits_per_byte(total_ln: float, num_bytes: int) -> float | None:
    """-log2 p per UTF-8 byte of the text; None for no byte."""
    return None if num_bytes == 0 else -total_ln / LN2 / num_bytes


def check_request_words(texts: Sequence[str], settings: Settings) -> None:
    """The limits a request must meet before any model is loaded (whitespace words: a tokenizer may
    only make more tokens, which `sentences_of` checks again)."""
    if not texts:
        raise Invalid("sentences: give at least one sentence")
    if len(texts) > settings.max_sentences:
        raise Invalid(f"sentences: {len(texts)} sentences, at most {settings.max_sentences} per request")
    _check_counts([len(words_of(text)) for text in texts], settings, "words")


def _check_counts(counts: Sequence[int], settings: Settings, unit: str) -> None:
    for i, count in enumerate(counts):
        if count > settings.max_sentence_tokens:
            raise Invalid(
                f"sentences[{i}] has {count} {unit}, at most {settings.max_sentence_tokens} per sentence", index=i
            )
    if sum(counts) > settings.max_request_tokens:
        raise Invalid(f"sentences: {sum(counts)} {unit} in all, at most {settings.max_request_tokens} per request")


def sentence_of(text: str, tokenizer: Tokenizer, pretokenized: bool) -> Sentence:
    """A raw text as the model reads it: the tokenizer's tokens (or, `pretokenized`, its whitespace
    tokens), with the text's words and bytes."""
    tokens = words_of(text) if pretokenized else tokenizer.tokens(text)
    return Sentence(tokens, len(words_of(text)), len(text.encode("utf-8")))


def sentences_of(
    texts: Sequence[str], options: ScoreOptions, settings: Settings, tokenizer: Tokenizer
) -> list[Sentence]:
    """The request's texts as sentences of the model's tokens; `Invalid` when a sentence has more
    tokens than the limit. The caller checked `check_request_words` first."""
    sentences = [sentence_of(text, tokenizer, options.pretokenized) for text in texts]
    _check_counts([len(s.tokens) for s in sentences], settings, "tokens")
    return sentences


def summarize(score: SentenceScore, log10: bool, num_words: int, num_bytes: int) -> ScoredSentence:
    """One sentence's numbers from its natural-log token scores."""
    kept = [lp for lp, unk in zip(score.logprobs, score.is_unk, strict=True) if not unk]
    total = math.fsum(score.logprobs)
    scale = 1 / LN10 if log10 else 1.0
    num_unk = score.num_tokens - len(kept)
    return ScoredSentence(
        tokens=score.tokens,
        logprobs=[lp * scale for lp in score.logprobs] if log10 else score.logprobs,
        is_unk=score.is_unk,
        total_logprob=total * scale,
        num_tokens=score.num_tokens,
        num_unk=num_unk,
        num_words=num_words,
        num_bytes=num_bytes,
        perplexity=perplexity_of_logprobs(total, score.num_tokens),
        perplexity_without_unk=perplexity_of_logprobs(math.fsum(kept), len(kept)),
        word_perplexity=perplexity_of_logprobs(total, num_words),
        bits_per_byte=bits_per_byte(total, num_bytes),
        unk_rate=num_unk / score.num_tokens if score.num_tokens else None,
    )


def totals(scores: Sequence[SentenceScore], sentences: Sequence[Sentence], log10: bool) -> ScoreTotals:
    """The aggregates over all sentences (see the module docstring for what each one averages)."""
    every: list[float] = []
    known: list[float] = []
    sentence_ppl: list[float] = []
    sentence_ppl_known: list[float] = []
    for score in scores:
        kept = [lp for lp, unk in zip(score.logprobs, score.is_unk, strict=True) if not unk]
        every += score.logprobs
        known += kept
        if score.num_tokens:
            sentence_ppl.append(perplexity_of_logprobs(math.fsum(score.logprobs), score.num_tokens) or math.nan)
        if kept:
            sentence_ppl_known.append(perplexity_of_logprobs(math.fsum(kept), len(kept)) or math.nan)
    total = math.fsum(every)
    num_words = sum(s.num_words for s in sentences)
    num_bytes = sum(s.num_bytes for s in sentences)
    return ScoreTotals(
        num_sentences=len(scores),
        num_tokens=len(every),
        num_unk=len(every) - len(known),
        num_words=num_words,
        num_bytes=num_bytes,
        total_logprob=total / LN10 if log10 else total,
        corpus_perplexity=perplexity_of_logprobs(total, len(every)),
        corpus_perplexity_without_unk=perplexity_of_logprobs(math.fsum(known), len(known)),
        mean_sentence_perplexity=math.fsum(sentence_ppl) / len(sentence_ppl) if sentence_ppl else None,
        mean_sentence_perplexity_without_unk=(
            math.fsum(sentence_ppl_known) / len(sentence_ppl_known) if sentence_ppl_known else None
        ),
        word_perplexity=perplexity_of_logprobs(total, num_words),
        bits_per_byte=bits_per_byte(total, num_bytes),
        unk_rate=(len(every) - len(known)) / len(every) if every else None,
    )


def unk_message(what: str, num_unk: int, num_tokens: int) -> str:
    """Why a share of `<unk>` tokens makes a perplexity mislead, in one sentence."""
    return (
        f"{what}: {num_unk} of {num_tokens} tokens ({num_unk / num_tokens:.0%}) are <unk>, words the model "
        "does not know; it scores them as the likely <unk> token, so the perplexity looks better than it is"
    )


def total_unk_warnings(num_unk: int, num_tokens: int, warn_rate: float) -> list[UnkWarning]:
    """The warning for texts taken together whose `<unk>` share is above `warn_rate` (none or one)."""
    if not num_tokens or num_unk / num_tokens <= warn_rate:
        return []
    return [UnkWarning(None, num_unk / num_tokens, unk_message("in all", num_unk, num_tokens))]


def unk_warnings(scored: Sequence[ScoredSentence], totals: ScoreTotals, warn_rate: float) -> list[UnkWarning]:
    """A warning for each sentence, and the aggregate, whose `<unk>` share is above `warn_rate`."""
    found = [
        UnkWarning(i, s.unk_rate, unk_message(f"sentences[{i}]", s.num_unk, s.num_tokens))
        for i, s in enumerate(scored)
        if s.unk_rate is not None and s.unk_rate > warn_rate
    ]
    return found + total_unk_warnings(totals.num_unk, totals.num_tokens, warn_rate)


def check_unk_rate(scored: Sequence[ScoredSentence], totals: ScoreTotals, limit: float | None) -> None:
    """`Invalid`, naming the rate, when the aggregate or a sentence has more `<unk>` than `limit`."""
    if limit is None:
        return
    if totals.unk_rate is not None and totals.unk_rate > limit:
        raise Invalid(
            f"{unk_message('the text', totals.num_unk, totals.num_tokens)}; max_unk_rate is {limit}",
            field="max_unk_rate",
            unk_rate=totals.unk_rate,
        )
    for i, s in enumerate(scored):
        if s.unk_rate is not None and s.unk_rate > limit:
            raise Invalid(
                f"{unk_message(f'sentences[{i}]', s.num_unk, s.num_tokens)}; max_unk_rate is {limit}",
                field="max_unk_rate",
                index=i,
                unk_rate=s.unk_rate,
            )


def summarize_all(
    scores: Sequence[SentenceScore], sentences: Sequence[Sentence], options: ScoreOptions
) -> tuple[list[ScoredSentence], ScoreTotals]:
    """The numbers of every sentence and the aggregates from their token scores; `Invalid` past the
    options' `max_unk_rate`."""
    scored = [
        summarize(score, options.log10, s.num_words, s.num_bytes) for score, s in zip(scores, sentences, strict=True)
    ]
    aggregate = totals(scores, sentences, options.log10)
    check_unk_rate(scored, aggregate, options.max_unk_rate)
    return scored, aggregate


def score_words(
    loaded: LoadedModel, sentences: Sequence[Sentence], options: ScoreOptions
) -> tuple[list[ScoredSentence], ScoreTotals]:
    """Score each sentence from a fresh state (see `sentences_of` for the checks); `Invalid` past
    the options' `max_unk_rate`."""
    try:
        with loaded.lock:
            scores = score_sentences(
                loaded.model,
                loaded.vocab,
                [s.tokens for s in sentences],
                score_eos=options.score_eos,
                precision=options.precision,
            )
    except KeyError as exc:  # only a vocabulary without <unk> refuses unknown words
        raise Invalid(f"cannot score: {exc.args[0]}") from None
    return summarize_all(scores, sentences, options)
