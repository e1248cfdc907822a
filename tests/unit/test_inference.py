"""model.inference: sentence scoring against a token-by-token hand computation (fresh zero state,
`<eos>` as context), batch/padding invariance and `<unk>` flags; generation's seeding, greedy
decoding, finish reasons (eos, length, stop sequences), n continuations and parameter checks."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
import torch
from harness import hand_logprobs

from model.config import preset
from model.data import EOS, UNK, Corpus, Vocabulary
from model.inference import GeneratedToken, generate, generate_stream, score_sentences
from model.network import LSTMLanguageModel
from model.train import Trainer

from .conftest import write_split_files


def greedy_by_hand(model: LSTMLanguageModel, vocab: Vocabulary, prompt: Sequence[str], steps: int) -> list[str]:
    ids = [vocab.eos_id] + [vocab.id_of(w) for w in prompt]
    with torch.no_grad():
        logits, state = model(torch.tensor([ids]), model.zero_state(1))
        chosen = []
        for _ in range(steps):
            best = int(logits[0, -1].argmax())
            chosen.append(best)
            logits, state = model(torch.tensor([[best]]), state)
    return vocab.decode(chosen)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[LSTMLanguageModel, Vocabulary]:
    """A model that learned 'a b c d' (3 in 4 lines) and 'a b e': greedy after 'a' is 'b c d <eos>'."""
    lines = ["a b c d", "a b c d", "a b e", "a b c d"] * 60
    directory = write_split_files(tmp_path_factory.mktemp("abcd"), lines, lines[:40], lines[:8])
    config = preset("test", hidden_size=16, num_steps=5, batch_size=4, max_max_epoch=4, max_epoch=4, device="cpu")
    trainer = Trainer(config, Corpus.load(directory))
    trainer.fit()
    assert trainer.state.history[-1]["valid_ppl"] < 2.0  # it did learn the pattern
    return trainer.model.eval(), trainer.vocab


# --- scoring -----------------------------------------------------------------------------------


def test_score_matches_hand_computation(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    vocab = corpus.vocab
    sentences = [["the", "cat", "sat"], ["a", "zebra", "ran", "fast", "on", "the", "mat"], ["N"]]
    scores = score_sentences(tiny_model, vocab, sentences)
    for words, score in zip(sentences, scores, strict=True):
        assert score.tokens == [*words, EOS]
        expected = hand_logprobs(tiny_model, vocab, [*words, EOS])
        assert score.logprobs == pytest.approx(expected, abs=1e-5)
        assert score.total_logprob == pytest.approx(sum(expected), abs=1e-5)
        assert score.perplexity == pytest.approx(math.exp(-sum(expected) / len(expected)), rel=1e-5)
        assert score.num_tokens == len(words) + 1


def test_score_without_eos_drops_only_the_last_token(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    words = ["the", "dog", "ran"]
    with_eos = score_sentences(tiny_model, corpus.vocab, [words])[0]
    without = score_sentences(tiny_model, corpus.vocab, [words], score_eos=False)[0]
    assert without.tokens == words
    assert without.logprobs == pytest.approx(with_eos.logprobs[:-1], abs=1e-6)


def test_score_is_batch_and_padding_invariant(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    vocab = corpus.vocab
    target = ["the", "big", "dog", "sat", "on", "a", "mat"]
    alone = score_sentences(tiny_model, vocab, [target])[0].logprobs
    rng = random.Random(0)
    others = [[rng.choice(vocab.words[:-1]) for _ in range(rng.randint(1, 12))] for _ in range(49)]
    in_batch = score_sentences(tiny_model, vocab, [*others[:20], target, *others[20:]])[20].logprobs
    long_ones = [["the"] * 40, ["cat", "ran"] * 25]
    padded = score_sentences(tiny_model, vocab, [long_ones[0], target, long_ones[1]])[1].logprobs
    small_groups = score_sentences(tiny_model, vocab, [*others[:5], target], batch_size=2)[5].logprobs
    for other in (in_batch, padded, small_groups):
        assert other == pytest.approx(alone, abs=1e-5)
    # and the input order is kept
    scores = score_sentences(tiny_model, vocab, others)
    assert [s.tokens[:-1] for s in scores] == others


def test_unk_flags(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    score = score_sentences(tiny_model, corpus.vocab, [["the", "zebra", UNK, "cat"]])[0]
    assert score.tokens == ["the", "zebra", UNK, "cat", EOS]
    assert score.is_unk == [False, True, True, False, False]
    # an unknown word is scored as <unk>, never dropped
    same = score_sentences(tiny_model, corpus.vocab, [["the", UNK, UNK, "cat"]])[0]
    assert score.logprobs == pytest.approx(same.logprobs, abs=1e-6)


def test_empty_sentence(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    only_eos = score_sentences(tiny_model, corpus.vocab, [[]])[0]
    assert only_eos.tokens == [EOS]
    assert only_eos.logprobs == pytest.approx(hand_logprobs(tiny_model, corpus.vocab, [EOS]), abs=1e-5)
    # with score_eos off an empty sentence has nothing to score: an empty score, the others unchanged
    both = score_sentences(tiny_model, corpus.vocab, [["the"], []], score_eos=False)
    assert both[1].tokens == [] and both[1].logprobs == [] and both[1].is_unk == []
    assert both[0].logprobs == score_sentences(tiny_model, corpus.vocab, [["the"]], score_eos=False)[0].logprobs


# --- generation --------------------------------------------------------------------------------


def test_same_seed_same_output(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    opts: dict[str, object] = {"max_tokens": 25, "temperature": 1.0, "stop_at_eos": False}
    a = generate(tiny_model, corpus.vocab, ["the"], seed=7, **opts)[0]
    b = generate(tiny_model, corpus.vocab, ["the"], seed=7, **opts)[0]
    assert a.tokens == b.tokens and a.logprobs == b.logprobs
    others = [generate(tiny_model, corpus.vocab, ["the"], seed=s, **opts)[0].tokens for s in range(8, 12)]
    assert any(tokens != a.tokens for tokens in others)  # sampling does vary with the seed
    assert a.finish_reason == "length" and len(a.tokens) == 25


def test_temperature_zero_is_the_argmax_chain(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    prompt = ["the", "cat"]
    result = generate(tiny_model, corpus.vocab, prompt, max_tokens=12, temperature=0.0, stop_at_eos=False)[0]
    assert result.tokens == greedy_by_hand(tiny_model, corpus.vocab, prompt, 12)
    # the reported logprobs are the model's own log p of each chosen token
    full = score_sentences(tiny_model, corpus.vocab, [prompt + result.tokens], score_eos=False)[0]
    assert result.logprobs == pytest.approx(full.logprobs[len(prompt) :], abs=1e-5)
    # top_k=1 and a tiny nucleus leave only the argmax, whatever the temperature
    for opts in ({"top_k": 1}, {"top_p": 1e-9}):
        sampled = generate(
            tiny_model, corpus.vocab, prompt, max_tokens=12, temperature=1.5, seed=3, stop_at_eos=False, **opts
        )[0]
        assert sampled.tokens == result.tokens


def test_stops_at_eos(trained: tuple[LSTMLanguageModel, Vocabulary]) -> None:
    model, vocab = trained
    assert greedy_by_hand(model, vocab, ["a"], 4) == ["b", "c", "d", EOS]
    result = generate(model, vocab, ["a"], max_tokens=10, temperature=0)[0]
    assert (result.tokens, result.finish_reason) == (["b", "c", "d"], "eos")
    kept_on = generate(model, vocab, ["a"], max_tokens=5, temperature=0, stop_at_eos=False)[0]
    assert kept_on.tokens[:4] == ["b", "c", "d", EOS] and kept_on.finish_reason == "length"


def test_length_limit(trained: tuple[LSTMLanguageModel, Vocabulary]) -> None:
    model, vocab = trained
    result = generate(model, vocab, ["a"], max_tokens=2, temperature=0)[0]
    assert (result.tokens, result.finish_reason) == (["b", "c"], "length")
    nothing = generate(model, vocab, ["a"], max_tokens=0, temperature=0)[0]
    assert nothing.tokens == [] and nothing.finish_reason == "length"


@pytest.mark.parametrize(
    ("stop", "tokens", "reason"),
    [
        ([["c", "d"]], ["b"], "stop"),  # the matched sequence is cut off
        ([["d"]], ["b", "c"], "stop"),
        ([["z"], ["b", "c"]], [], "stop"),
        ([["c", "x"]], ["b", "c", "d"], "eos"),  # held back while it might start a stop sequence, then released
    ],
)
def test_stop_sequences(
    trained: tuple[LSTMLanguageModel, Vocabulary], stop: list[list[str]], tokens: list[str], reason: str
) -> None:
    model, vocab = trained
    result = generate(model, vocab, ["a"], max_tokens=10, temperature=0, stop=stop)[0]
    assert (result.tokens, result.finish_reason) == (tokens, reason)
    assert len(result.logprobs) == len(tokens)


def test_n_continuations(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    results = generate(tiny_model, corpus.vocab, ["a"], max_tokens=8, n=4, seed=1, stop_at_eos=False)
    assert len(results) == 4
    assert all(len(r.tokens) == 8 and r.finish_reason == "length" for r in results)
    assert len({tuple(r.tokens) for r in results}) > 1  # the rows sample independently
    greedy = generate(tiny_model, corpus.vocab, ["a"], max_tokens=8, n=3, temperature=0, stop_at_eos=False)
    assert all(r.tokens == greedy[0].tokens for r in greedy)


def test_stream_events(trained: tuple[LSTMLanguageModel, Vocabulary]) -> None:
    model, vocab = trained
    events = list(generate_stream(model, vocab, ["a"], max_tokens=10, temperature=0, n=2))
    tokens = [e for e in events if isinstance(e, GeneratedToken)]
    finished = [e for e in events if not isinstance(e, GeneratedToken)]
    assert sorted(finished) == [(0, "eos"), (1, "eos")]
    assert [t.token for t in tokens if t.index == 0] == ["b", "c", "d"]


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": 0},
        {"n": 0},
        {"max_tokens": -1},
    ],
)
def test_bad_generation_parameters(tiny_model: LSTMLanguageModel, corpus: Corpus, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate(tiny_model, corpus.vocab, ["the"], **bad)


def test_unknown_prompt_words_are_read_as_unk(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    a = generate(tiny_model, corpus.vocab, ["zebra", "cat"], max_tokens=6, temperature=0, stop_at_eos=False)[0]
    b = generate(tiny_model, corpus.vocab, [UNK, "cat"], max_tokens=6, temperature=0, stop_at_eos=False)[0]
    assert a.tokens == b.tokens


def test_tiny_model_fixture_is_untrained_but_not_uniform(tiny_model: LSTMLanguageModel, corpus: Corpus) -> None:
    # Guards the tests above: a flat distribution would make argmax and sampling checks vacuous.
    lp = score_sentences(tiny_model, corpus.vocab, [["the", "cat"]])[0].logprobs
    assert max(lp) - min(lp) > 0.1
