"""Sentence-by-sentence scoring against the model's corpus evaluation.

The corpus evaluation (the seed's test run) reads the test file as one stream and carries the LSTM
state across sentence boundaries; /v1/score starts every sentence from a zero state after `<eos>`.
Defined the same way, a corpus run that resets the state at every `<eos>` (and also predicts the
first word, from `<eos>`), the two agree: the sentence totals sum to the corpus total.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.config import preset
from model.data import EOS, Vocabulary, read_tokens
from model.inference import score_sentences
from model.network import LSTMLanguageModel

from .conftest import InferenceService, ModelFiles

REPO = Path(__file__).resolve().parents[2]
PTB_DIR = Path(os.environ.get("PTB_DIR", REPO.parent / "shared" / "data" / "ptb"))


@torch.no_grad()
def corpus_logprob(model: LSTMLanguageModel, ids: list[int], eos: int, reset_at_eos: bool) -> tuple[float, int]:
    """Total natural log p of the stream `ids` read one token at a time (B = 1, T = 1), and the count.

    The stream is `<eos>` followed by the corpus, so the first word is predicted too. With
    `reset_at_eos` the state is zeroed before every `<eos>` is read: each sentence then starts fresh.
    """
    state = model.zero_state(1)
    total, count = 0.0, 0
    for previous, target in itertools.pairwise(ids):
        if reset_at_eos and previous == eos:
            state = model.zero_state(1)
        logits, state = model(torch.tensor([[previous]]), state)
        total += torch.log_softmax(logits[0, -1].double(), dim=-1)[target].item()
        count += 1
    return total, count


def test_sentence_scores_sum_to_a_corpus_evaluation_that_resets_at_eos(
    inference_service: InferenceService, direct: ModelFiles
) -> None:
    lines = (inference_service.run.corpus_dir / "test.txt").read_text().splitlines()
    response = inference_service.client.post("/v1/score", json={"model": inference_service.job_id, "sentences": lines})
    assert response.status_code == 200, response.text
    body = response.json()
    stream = [direct.vocab.eos_id] + [
        direct.vocab.id_of(t) for t in read_tokens(inference_service.run.corpus_dir / "test.txt")
    ]
    total, count = corpus_logprob(direct.model, stream, direct.vocab.eos_id, reset_at_eos=True)
    assert body["aggregate"]["num_tokens"] == count
    assert math.isclose(body["aggregate"]["total_logprob"], total, rel_tol=1e-6)
    assert math.isclose(body["aggregate"]["corpus_perplexity"], math.exp(-total / count), rel_tol=1e-6)
    # The seed's evaluation carries the state across sentences: a different (here, defined) number.
    carried, _ = corpus_logprob(direct.model, stream, direct.vocab.eos_id, reset_at_eos=False)
    assert not math.isclose(carried, total, rel_tol=1e-6)


@pytest.mark.ptb
@pytest.mark.skipif(not (PTB_DIR / "ptb.test.txt").is_file(), reason=f"no PTB corpus at {PTB_DIR}")
def test_ptb_test_sentences_agree_with_a_resetting_corpus_run() -> None:
    """The small preset's shapes over the PTB vocabulary (untrained weights: agreement is exact either way)."""
    vocab = Vocabulary.build(read_tokens(PTB_DIR / "ptb.train.txt"))
    torch.manual_seed(0)
    model = LSTMLanguageModel(preset("small", device="cpu"), len(vocab)).eval()
    lines = (PTB_DIR / "ptb.test.txt").read_text().splitlines()[:100]
    scores = score_sentences(model, vocab, [line.split() for line in lines])
    stream = [vocab.eos_id] + [vocab.id_of(t) for line in lines for t in [*line.split(), EOS]]
    total, count = corpus_logprob(model, stream, vocab.eos_id, reset_at_eos=True)
    assert sum(s.num_tokens for s in scores) == count
    assert math.isclose(math.fsum(s.total_logprob for s in scores), total, rel_tol=1e-6)
    # and the seed's way (state carried, first word not predicted) scores count - 1 tokens
    x = torch.tensor([stream[1:-1]])
    with torch.no_grad():
        logits, _ = model(x, model.zero_state(1))
        carried = -F.cross_entropy(logits[0], torch.tensor(stream[2:]), reduction="sum").item()
    assert not math.isclose(carried, total, rel_tol=1e-4)
