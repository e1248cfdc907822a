"""Sentence scoring for the API: limits, text conventions, log base and the aggregates.

Every sentence is scored from a fresh zero state with `<eos>` as its context
(`model.inference.score_sentences`), so its numbers never depend on the other sentences of the
request, on padding or on the batch size.

Perplexity is always exp(-mean natural-log probability), whatever `log10` says: 10 ** -(mean log10 p)
is the same number. The aggregates say what they average:

- `corpus_perplexity`: token-weighted, exp(-sum of all log p / number of tokens), what a corpus
  evaluation reports;
- `mean_sentence_perplexity`: the plain mean of the per-sentence perplexities;
- `..._without_unk`: the same with the `<unk>` tokens left out of the sums and counts (they still
  serve as context), KenLM's "excluding OOVs".

An empty sentence (a blank line) is allowed: with `score_eos` its one token is the `<eos>` that ends
it, and it counts like any sentence; without `score_eos` it has no token, its perplexity is null, it
adds nothing to the token-weighted sums and is left out of the per-sentence means, while
`num_sentences` still counts it. A number with no token to average over is null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import Invalid
from app.inference import conventions
from app.inference.conventions import PLAIN
from app.inference.registry import LoadedModel
from app.settings import Settings
from model.inference import SentenceScore, score_sentences
from model.train import perplexity

LN10 = math.log(10.0)


@dataclass(frozen=True)
class ScoreOptions:
    log10: bool = False  # report log-probabilities in base 10 (KenLM) instead of base e
    score_eos: bool = True  # score the end-of-sentence marker after the last word
    normalize: bool = False  # bring raw text to the model's text convention before the vocabulary lookup
    precision: str = "fp32"  # fp32 or bf16 (see model.inference)


@dataclass(frozen=True)
class ScoredSentence:
    tokens: list[str]  # the looked-up words (normalised if asked), then <eos> when it is scored
    logprobs: list[float]  # log p(token | previous tokens), base e or 10
    is_unk: list[bool]
    total_logprob: float
    num_tokens: int
    num_unk: int
    perplexity: float | None  # None for a sentence with no token (empty, score_eos off)
    perplexity_without_unk: float | None  # None when every token is <unk>


@dataclass(frozen=True)
class ScoreTotals:
    num_sentences: int
    num_tokens: int
    num_unk: int
    total_logprob: float
    corpus_perplexity: float | None  # None when no sentence has a token
    corpus_perplexity_without_unk: float | None
    mean_sentence_perplexity: float | None
    mean_sentence_perplexity_without_unk: float | None


def perplexity_of_logprobs(total_ln: float, count: int) -> float | None:
    """The perplexity of `count` tokens whose natural-log probabilities sum to `total_ln` (the
    trainer's `perplexity`: inf rather than an overflow); None for no token."""
    return None if count == 0 else perplexity(-total_ln, count)


def words_of(
    texts: Sequence[str], options: ScoreOptions, settings: Settings, convention: str = PLAIN
) -> list[list[str]]:
    """Tokenised sentences, normalised to the model's text `convention` when the options ask;
    `Invalid` when they go over the limits."""
    if not texts:
        raise Invalid("sentences: give at least one sentence")
    if len(texts) > settings.max_sentences:
        raise Invalid(f"sentences: {len(texts)} sentences, at most {settings.max_sentences} per request")
    sentences: list[list[str]] = []
    total = 0
    for i, text in enumerate(texts):
        words = conventions.words_of(text, convention, options.normalize)
        if len(words) > settings.max_sentence_tokens:
            raise Invalid(
                f"sentences[{i}] has {len(words)} words, at most {settings.max_sentence_tokens} per sentence", index=i
            )
        total += len(words)
        sentences.append(words)
    if total > settings.max_request_tokens:
        raise Invalid(f"sentences: {total} words in all, at most {settings.max_request_tokens} per request")
    return sentences


def summarize(score: SentenceScore, log10: bool) -> ScoredSentence:
    """One sentence's numbers from its natural-log token scores."""
    kept = [lp for lp, unk in zip(score.logprobs, score.is_unk, strict=True) if not unk]
    total = math.fsum(score.logprobs)
    scale = 1 / LN10 if log10 else 1.0
    ppl = perplexity_of_logprobs(total, score.num_tokens)
    return ScoredSentence(
        tokens=score.tokens,
        logprobs=[lp * scale for lp in score.logprobs] if log10 else score.logprobs,
        is_unk=score.is_unk,
        total_logprob=total * scale,
        num_tokens=score.num_tokens,
        num_unk=score.num_tokens - len(kept),
        perplexity=ppl,
        perplexity_without_unk=perplexity_of_logprobs(math.fsum(kept), len(kept)),
    )


def totals(scores: Sequence[SentenceScore], log10: bool) -> ScoreTotals:
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
    return ScoreTotals(
        num_sentences=len(scores),
        num_tokens=len(every),
        num_unk=len(every) - len(known),
        total_logprob=total / LN10 if log10 else total,
        corpus_perplexity=perplexity_of_logprobs(total, len(every)),
        corpus_perplexity_without_unk=perplexity_of_logprobs(math.fsum(known), len(known)),
        mean_sentence_perplexity=math.fsum(sentence_ppl) / len(sentence_ppl) if sentence_ppl else None,
        mean_sentence_perplexity_without_unk=(
            math.fsum(sentence_ppl_known) / len(sentence_ppl_known) if sentence_ppl_known else None
        ),
    )


def score_words(
    loaded: LoadedModel, sentences: Sequence[Sequence[str]], options: ScoreOptions
) -> tuple[list[ScoredSentence], ScoreTotals]:
    """Score each word list as one sentence from a fresh state (see `words_of` for the checks)."""
    try:
        with loaded.lock:
            scores = score_sentences(
                loaded.model, loaded.vocab, sentences, score_eos=options.score_eos, precision=options.precision
            )
    except KeyError as exc:  # only a vocabulary without <unk> refuses unknown words
        raise Invalid(f"cannot score: {exc.args[0]}") from None
    return [summarize(s, options.log10) for s in scores], totals(scores, options.log10)
